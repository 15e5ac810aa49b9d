"""What the wheel installs: one ``minigate`` package (and the already prefixed ``minigate_plugins``), nothing generic.

The repository keeps gateway/, providers/, web/ and migrations/ at its top; minigate/ holds relative symlinks to
them, and setuptools' discovery follows those, so they are installed as minigate.gateway and so on. The wheel is
built for real, once for this module (``pip wheel --no-build-isolation`` with the venv's setuptools, no index), from
a copy of the source that keeps the symlinks, as a git checkout or the image's COPY does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.lock_helpers import ROOT, registry_env

LINKED = ("gateway", "providers", "web", "migrations")  # minigate/NAME -> ../NAME
# pyproject's [tool.setuptools.package-data]
PACKAGE_DATA = (".html", ".css", ".js", ".json", ".ini", ".mako", ".txt", ".md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel .`` builds from this source."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: an in-tree build leaves build/ and *.egg-info behind
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*cache", "test-artifacts"
    )
    shutil.copytree(ROOT, src, ignore=ignore, symlinks=True)
    options = ("--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "out"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *options, str(src)],
        env=registry_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = (tmp / "out").glob("minigate-*.whl")
    return built


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def _code(wheel: Path) -> set[str]:
    return {name for name in _names(wheel) if ".dist-info/" not in name}


def test_the_wheel_installs_only_minigate(wheel: Path) -> None:
    top = {name.split("/", 1)[0] for name in _code(wheel)}
    assert top == {"minigate", "minigate_plugins"}
    assert not any(name.startswith(tuple(f"{folder}/" for folder in LINKED)) for name in _names(wheel))


def test_the_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    """Every .py and package-data file of the four folders is in the wheel under minigate/, and nothing else is."""
    expected = {"minigate/__init__.py"}
    for top in (*LINKED, "minigate_plugins"):
        for folder, dirs, files in os.walk(ROOT / top):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith((".py", *PACKAGE_DATA)):
                    path = (Path(folder) / name).relative_to(ROOT).as_posix()
                    expected.add(path if top == "minigate_plugins" else f"minigate/{path}")
    got = _code(wheel)
    assert sorted(expected - got) == [], "missing from the wheel"
    assert sorted(got - expected) == [], "in the wheel, but not in the source folders"
    for name in (
        "minigate/gateway/app.py",
        "minigate/migrations/env.py",
        "minigate/migrations/script.py.mako",
        "minigate/web/templates/base.html",
        "minigate/web/static/app.css",
        "minigate/web/static/app.js",
    ):
        assert name in got, name


def test_the_wheel_holds_files_not_links(wheel: Path) -> None:
    """A wheel cannot carry a symlink: setuptools copied what minigate/'s links point to."""
    with zipfile.ZipFile(wheel) as archive:
        links = [info.filename for info in archive.infolist() if (info.external_attr >> 16) & 0o170000 == 0o120000]
        entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "minigate = minigate.gateway.cli:main" in archive.read(entry_points).decode().splitlines()
    assert links == []


def test_the_installed_wheel_runs_from_minigate(wheel: Path, tmp_path: Path) -> None:
    """Installed (into a folder, without the source on the path), the app imports, Alembic finds its scripts and
    the templates are there; the bare names are gone."""
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        env=registry_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = """
import importlib.util
import minigate, minigate.gateway.app, minigate_plugins.redact
from minigate.gateway.storage.db import alembic_config
from minigate.web.state import WebState
scripts = alembic_config().get_main_option("script_location")
print(minigate.__file__)
print(scripts)
print(WebState.create().templates.get_template("base.html").filename)
print([name for name in ("gateway", "providers", "web", "migrations") if importlib.util.find_spec(name)])
"""
    env = {**registry_env(), "PYTHONPATH": str(target), "MINIGATE_EXECUTION_PROVIDER": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    init, scripts, template, bare = result.stdout.splitlines()
    assert init == str(target / "minigate" / "__init__.py")
    assert scripts == str(target / "minigate" / "migrations") and (Path(scripts) / "script.py.mako").is_file()
    assert template == str(target / "minigate" / "web" / "templates" / "base.html")
    assert bare == "[]"


def test_the_image_copies_what_the_wheel_is_built_from(wheel: Path) -> None:
    """The Dockerfile's builder stage copies minigate/ (its symlinks stay symlinks), their targets and
    minigate_plugins/: every folder the wheel's packages come from."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    builder = dockerfile.split("FROM ${PYTHON_IMAGE} AS builder", 1)[1].split("\nFROM ", 1)[0]
    copied = {line.split()[1] for line in builder.splitlines() if line.startswith("COPY ") and len(line.split()) == 3}
    top = {name.split("/", 1)[0] for name in _code(wheel)}
    links = {os.readlink(ROOT / "minigate" / name) for name in LINKED}
    assert links == {f"../{name}" for name in LINKED}
    assert top | set(LINKED) <= copied, sorted(top | set(LINKED) - copied)

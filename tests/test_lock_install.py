"""The lock files (deploy/requirements-*.lock) install, with pip checking every file's sha256.

No container engine runs here, so the image's builder stage is mirrored: the Dockerfile's builder COPY lines are
copied into a temporary folder and its RUN lines run there into a temporary venv, with pip reaching only its
default index (no local wheel folder or mirror), so the locked hashes are proven against the registry's files.
That real install is the cpu lock (about 100 MB) and the torchcpu lock (PyTorch's CPU-only torch: about 1.5 GB
installed, under a minute here); .ci/run's install of the test lock is run for real too (in a copy of the
source, minigate editable); the other torch-sized locks are checked with `pip install --dry-run --platform`:
for x86_64 and aarch64, every pin must have a wheel for CPython 3.11 on Linux whose published sha256 is in the
lock, and the metadata of those wheels must need nothing the lock lacks. What the lock files say is checked in
tests/test_lock.py.

PyTorch's CPU-only wheel is not on PyPI: the torchcpu tests take it from TORCH_CPU_WHEELS (default /opt/wheels,
the folder scripts/lock.sh hashed it from, as a user's PIP_FIND_LINKS would name it) and fail, never skip, when
it is not there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.lock_helpers import (
    CUDA_ONLY,
    ROOT,
    TORCH_CPU,
    TORCH_CPU_VARIANTS,
    VARIANTS,
    lock_inputs,
    parse_lock,
    registry_env,
    torch_cpu_wheel,
)


def test_the_cpu_only_torch_wheel_matches_its_pin(tmp_path: Path) -> None:
    """pip accepts the CPU-only wheel under the lock's hash, and refuses another file of the same name."""
    torch = parse_lock(lock_inputs.lock_path(TORCH_CPU))["torch"]
    wheel = torch_cpu_wheel()
    requirement = tmp_path / "torch.txt"
    requirement.write_text(f"torch=={torch.version} {' '.join(f'--hash=sha256:{h}' for h in torch.hashes)}\n")
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    with zipfile.ZipFile(impostor / wheel.name, "w") as fake:
        fake.writestr(
            f"torch-{torch.version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: torch\nVersion: {torch.version}\n",
        )

    def download(folder: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary=:all:"),
                *("--no-index", "--find-links", str(folder), "-d", str(tmp_path / "got"), "-r", str(requirement)),
            ],
            env=registry_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    refused = download(impostor)
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr, refused.stderr
    accepted = download(wheel.parent)
    assert accepted.returncode == 0, accepted.stderr
    assert (tmp_path / "got" / wheel.name).is_file()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"MINIGATE_EXTRAS": "docs"}, "requirements-cpu-docs.lock"),
        ({"MINIGATE_EXTRAS": "test", "MINIGATE_ACCELERATOR": "cuda"}, "requirements-cuda-test.lock"),
        ({"MINIGATE_EDITABLE": "yes"}, "MINIGATE_EDITABLE must be 1, 0 or empty"),
        ({"MINIGATE_TORCH": "rocm"}, "MINIGATE_TORCH must be pypi or cpu"),
        ({"MINIGATE_TORCH": "cpu", "MINIGATE_ACCELERATOR": "cuda"}, "locked for MINIGATE_ACCELERATOR=cpu on x86_64"),
    ],
)
def test_install_script_refuses_a_choice_without_a_lock(tmp_path: Path, settings: dict[str, str], message: str) -> None:
    result = subprocess.run(
        ["sh", str(ROOT / "deploy" / "install.sh"), str(tmp_path / "venv")],
        cwd=ROOT,
        env=registry_env(**settings),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "venv").exists()


def test_install_script_says_where_the_cpu_only_torch_comes_from(tmp_path: Path) -> None:
    """MINIGATE_TORCH=cpu where pip finds no file: pip's failure, then what the build needs."""
    empty = tmp_path / "wheels"
    empty.mkdir()
    result = subprocess.run(
        ["sh", str(ROOT / "deploy" / "install.sh"), str(tmp_path / "venv"), "deps"],
        cwd=ROOT,
        env=registry_env(MINIGATE_TORCH="cpu", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    hint = (
        "PIP_EXTRA_INDEX_URL to PyTorch's CPU-only wheel index or PIP_FIND_LINKS to a folder holding torch==2.13.0+cpu"
    )
    assert f"requirements-{TORCH_CPU}.lock pins PyTorch's CPU-only torch" in result.stderr, result.stderr
    assert hint in result.stderr.replace("\n", " "), result.stderr


@pytest.mark.parametrize("variant", ["cpu", TORCH_CPU])
def test_the_builder_stage_installs_the_lock(variant: str, tmp_path: Path) -> None:
    """The Dockerfile's builder stage: its COPY lines, then its RUN lines, for real.

    `cpu` is MINIGATE_EXTRAS="" (the serving image). The torchcpu variant is the default extras with
    MINIGATE_TORCH=cpu and PIP_FIND_LINKS naming the folder with PyTorch's CPU-only wheel, as a user would build
    it; every other file comes from the registry.
    """
    dockerfile = (ROOT / "Dockerfile").read_text()
    builder = dockerfile.split("FROM ${PYTHON_IMAGE} AS builder", 1)[1].split("\nFROM ", 1)[0]
    src, venv = tmp_path / "src", tmp_path / "opt-minigate"
    src.mkdir()
    settings = {"MINIGATE_EXTRAS": "", "MINIGATE_ACCELERATOR": "cpu"}
    if variant == TORCH_CPU:
        wheels = torch_cpu_wheel().parent
        settings = {"MINIGATE_ACCELERATOR": "cpu", "MINIGATE_TORCH": "cpu", "PIP_FIND_LINKS": str(wheels)}
    env = registry_env(**settings, PYTHON=shutil.which("python3") or "python3")
    for line in builder.splitlines():
        if line.startswith("COPY "):
            *sources, target = line.split()[1:]
            destination = src / target
            for pattern in sources:
                matches = sorted(ROOT.glob(pattern))
                assert matches, f"the Dockerfile copies {pattern}, which does not exist"
                for found in matches:
                    if found.is_dir():
                        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                        # Docker's COPY keeps a symlink inside a copied folder as a symlink (minigate/gateway).
                        shutil.copytree(found, destination, ignore=ignore, dirs_exist_ok=True, symlinks=True)
                    else:
                        folder = destination if target.endswith("/") else destination.parent
                        folder.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(found, folder / found.name if target.endswith("/") else destination)
        elif line.startswith("RUN "):
            command = line[4:].replace("/opt/minigate", str(venv))
            result = subprocess.run(command, shell=True, cwd=src, env=env, capture_output=True, text=True, check=False)
            assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            if line.endswith(" minigate"):
                assert f"installed minigate from deploy/requirements-{variant}.lock" in result.stdout, result.stdout
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    versions = {canonicalize_name(d["name"]): d["version"] for d in json.loads(installed.stdout)}
    pins = parse_lock(lock_inputs.lock_path(variant))
    for name, pin in pins.items():
        assert versions.get(name) == pin.version, f"{name}: installed {versions.get(name)}, locked {pin.version}"
    assert set(versions) - set(pins) <= {"minigate", "pip"}, set(versions) - set(pins)
    if variant == TORCH_CPU:
        assert versions["torch"].endswith("+cpu") and not any(CUDA_ONLY.fullmatch(name) for name in versions)
        probe = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import torch; print(torch.__version__, torch.version.cuda, int(torch.ones(3).sum()))",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert probe.stdout.split() == [versions["torch"], "None", "3"], probe.stdout + probe.stderr
    check = subprocess.run(
        [str(venv / "bin" / "minigate"), "config", "check", str(ROOT / "deploy" / "minigate.json")],
        cwd=tmp_path,
        env={**env, "MINIGATE_EXECUTION_PROVIDER": "cpu", "MINIGATE_DATABASE_URL": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0 and ": ok" in check.stdout, check.stdout + check.stderr

    if variant != "cpu":
        return
    # The hashes are what pip goes by: the same lock with one package's hash changed is refused.
    tampered = tmp_path / "tampered.lock"
    idna = pins["idna"]
    tampered.write_text(f"idna=={idna.version} --hash=sha256:{'0' * 64}\n")
    refused = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--require-hashes",
            "--no-deps",
            "--dry-run",
            "--ignore-installed",
            *("--target", str(tmp_path / "t"), "-r", str(tampered)),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr, refused.stderr


def test_ci_installs_the_test_lock(tmp_path: Path) -> None:
    """.ci/run's install line, for real on x86_64: the CPU-only torch, the test tools, minigate editable.

    It runs in a copy of the source (an editable install writes its metadata there) with PIP_FIND_LINKS naming the
    folder with PyTorch's CPU-only wheel, every other file from the registry; deploy/install.sh has run `pip
    check` when it succeeds.
    """
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    (line,) = [line for line in ci if "deploy/install.sh" in line and not line.startswith("#")]
    src = tmp_path / "src"
    venv = src / ".venv"  # as .ci/run names it: relative to the source folder
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "node_modules", ".*cache", ".hypothesis"
    )
    shutil.copytree(ROOT, src, ignore=ignore, symlinks=True)  # minigate/'s symlinks stay symlinks
    env = registry_env(PIP_FIND_LINKS=str(torch_cpu_wheel().parent), PYTHON=shutil.which("python3") or "python3")
    command = line.replace("$torch", "cpu")
    result = subprocess.run(command, shell=True, cwd=src, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    lock = f"deploy/requirements-{lock_inputs.TEST_TORCH_CPU_VARIANT}.lock"
    assert f"installed minigate from {lock}" in result.stdout, result.stdout
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    versions = {canonicalize_name(d["name"]): d["version"] for d in json.loads(installed.stdout)}
    pins = parse_lock(ROOT / lock)
    assert {name: versions.get(name) for name in pins} == {name: pin.version for name, pin in pins.items()}
    assert set(versions) - set(pins) == {"minigate", "pip"}, set(versions) - set(pins)
    assert versions["torch"].endswith("+cpu") and not any(CUDA_ONLY.fullmatch(name) for name in versions)
    # Editable: the copy's source is what runs, and the test tools are there.
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import minigate.gateway, pytest, hypothesis; print(minigate.gateway.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.stdout.strip() == str(src / "minigate" / "gateway" / "__init__.py"), probe.stdout + probe.stderr
    # minigate/gateway is the copy's symlink to its gateway/ folder, as in a git checkout.
    assert (src / "minigate" / "gateway").is_symlink(), "the copy must keep minigate/'s symlinks"
    assert subprocess.run([str(venv / "bin" / "minigate"), "--help"], env=env, capture_output=True).returncode == 0


def _platforms(arch: str) -> list[str]:
    """pip's tags for --platform on Debian bookworm (glibc 2.36): pip does not widen a --platform by itself."""
    oldest = 5 if arch == "x86_64" else 17
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, oldest - 1, -1)]
    tags += [f"manylinux2014_{arch}", f"linux_{arch}"]
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return [option for tag in tags for option in ("--platform", tag)]


def _marker_env(arch: str, extra: str) -> dict[str, str]:
    return {
        "implementation_name": "cpython",
        "implementation_version": "3.11.9",
        "os_name": "posix",
        "platform_machine": arch,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": "3.11.9",
        "python_version": "3.11",
        "sys_platform": "linux",
        "extra": extra,
    }


def _for_machine(lock: str, names: set[str]) -> str:
    """The entries of ``lock`` pinning ``names``, markers dropped."""
    out: list[str] = []
    keep = False
    for line in lock.splitlines(keepends=True):
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if pin is not None:
            keep = canonicalize_name(pin.group(1)) in names
            line = f"{pin.group(0)} \\\n" if line.rstrip().endswith("\\") else f"{pin.group(0)}\n"
        elif not line.startswith((" ", "\t")):
            keep = True
        if keep:
            out.append(line)
    return "".join(out)


@pytest.mark.parametrize(("variant", "arch"), [(v, a) for v in VARIANTS for a in lock_inputs.arches(v)])
def test_lock_installs_on_its_platform(variant: str, arch: str, tmp_path: Path) -> None:
    path = lock_inputs.lock_path(variant)
    pins = {
        n: p
        for n, p in parse_lock(path).items()
        if p.marker is None or Marker(p.marker).evaluate(_marker_env(arch, ""))
    }
    # pip evaluates a pin's marker (the OpenVINO plugin's `platform_machine == "x86_64"`) on this machine, not on the
    # --platform one: the lock's pins for ``arch``, as pip installs them there.
    requirements = tmp_path / path.name
    requirements.write_text(_for_machine(path.read_text(), set(pins)))
    report = tmp_path / "report.json"
    # PyTorch's CPU-only torch is not on PyPI: a wheel folder, as the Dockerfile's PIP_FIND_LINKS would name it.
    wheels = {"PIP_FIND_LINKS": str(torch_cpu_wheel().parent)} if variant in TORCH_CPU_VARIANTS else {}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            *(*_platforms(arch), "--python-version", "3.11", "--target", str(tmp_path / "t"), "--report", str(report)),
            "-q",
            "-r",
            str(requirements),
        ],
        env=registry_env(**wheels),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    chosen = {canonicalize_name(i["metadata"]["name"]): i for i in installs}
    assert set(chosen) == set(pins)
    for name, item in chosen.items():
        assert item["metadata"]["version"] == pins[name].version
        assert item["download_info"]["archive_info"]["hashes"]["sha256"] in pins[name].hashes
    # What those wheels' metadata needs, from the lock's inputs down, is in the lock, and nothing more is.
    needed: set[str] = set()
    queue = [(Requirement(r), "") for r in lock_inputs.requirements(variant)]
    seen: set[tuple[str, str]] = set()
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker is not None and not Marker(str(requirement.marker)).evaluate(_marker_env(arch, extra)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in chosen, f"{path.name} lacks {requirement} on {arch}"
        version = Version(chosen[name]["metadata"]["version"])
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} breaks {requirement}"
        needed.add(name)
        for wanted in ["", *requirement.extras]:
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                requires = chosen[name]["metadata"].get("requires_dist", [])
                queue += [(Requirement(r), wanted) for r in requires]
    assert needed == set(chosen), f"{path.name} pins what nothing needs on {arch}: {set(chosen) - needed}"

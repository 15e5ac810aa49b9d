"""Plugins for the tests: an installable package with an entry point (``minigate-testplugin``), and modules that
fail or refuse on purpose, listed by module path in the tests' configs."""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "minigate-testplugin"
_SOURCE = PACKAGE / "minigate_testplugin" / "__init__.py"


def _current() -> bool:
    try:
        dist = importlib.metadata.distribution("minigate-testplugin")
    except importlib.metadata.PackageNotFoundError:
        return False
    installed = Path(str(dist.locate_file("minigate_testplugin/__init__.py")))
    return installed.is_file() and installed.read_bytes() == _SOURCE.read_bytes()


def ensure_testplugin() -> None:
    """Install the test plugin package into this environment (a copy, not editable: new imports see it at once),
    again if its source changed. Offline first (the environment's setuptools); with an index only as a fallback."""
    if _current():
        return
    with tempfile.TemporaryDirectory() as tmp:  # built from a copy: no build folders left in the repository
        source = shutil.copytree(PACKAGE, Path(tmp) / PACKAGE.name)
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(source)]
        done = subprocess.run([*pip, "--no-build-isolation", "--no-index"], capture_output=True, timeout=180)
        if done.returncode != 0:
            subprocess.run(pip, check=True, capture_output=True, timeout=300)
    importlib.invalidate_caches()  # the finders and importlib.metadata look at site-packages again
    assert _current(), "the test plugin package did not install"

"""Reading the lock files (deploy/requirements-*.lock), shared by tests/test_lock.py and test_lock_install.py.

The lock inputs come from deploy/lock_inputs.py (loaded by path: deploy/ is not a package), the locks are parsed
strictly (exact pins with sha256 hashes, nothing else), and pip is run against its default index only.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

__all__ = [
    "CUDA_ONLY",
    "ROOT",
    "TORCH_CPU",
    "TORCH_CPU_VARIANTS",
    "TORCH_CPU_WHEELS",
    "VARIANTS",
    "Pin",
    "lock_inputs",
    "parse_lock",
    "registry_env",
    "torch_cpu_wheel",
]

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("lock_inputs", ROOT / "deploy" / "lock_inputs.py")
assert _spec is not None and _spec.loader is not None
lock_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_inputs)

VARIANTS: tuple[str, ...] = lock_inputs.VARIANTS
TORCH_CPU: str = lock_inputs.TORCH_CPU_VARIANT
TORCH_CPU_VARIANTS: tuple[str, ...] = lock_inputs.TORCH_CPU_VARIANTS  # TORCH_CPU and the test environment's
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
TORCH_CPU_WHEELS = Path(os.environ.get("TORCH_CPU_WHEELS", "/opt/wheels"))
# What PyPI's Linux torch needs and PyTorch's CPU-only build does not: NVIDIA's CUDA wheels and triton.
CUDA_ONLY = re.compile(r"nvidia-.*|cuda-.*|triton")


class Pin:
    """One pinned package of a lock: its version, sha256 hashes, marker and the lock's "via" comments."""

    def __init__(self, name: str, version: str, hashes: list[str], marker: str | None, via: list[str]) -> None:
        self.name, self.version, self.hashes, self.marker, self.via = name, version, hashes, marker, via


def parse_lock(path: Path) -> dict[str, Pin]:
    """A lock's pins by normalised name; fails on anything but `name==version [; marker] --hash=...` entries."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    logical: list[str] = []
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            if current is not None:
                current.via.append(raw.strip("# ").strip())
            continue
        logical.append(raw.rstrip("\\").strip())
        if raw.endswith("\\"):
            continue
        line, logical = " ".join(logical).strip(), []
        if not line:
            continue
        assert not line.startswith("-"), f"{path.name}: an option line: {line!r}"
        requirement, _, options = line.partition(" --hash=")
        options = "--hash=" + options
        spec, _, marker = requirement.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", spec.strip())
        assert match, f"{path.name}: not an exact pin: {line!r}"
        hashes = HASH.findall(options)
        assert hashes and len(hashes) == options.count("--hash="), f"{path.name}: {spec} lacks a sha256 hash"
        current = Pin(canonicalize_name(match[1]), match[2], hashes, marker.strip() or None, [])
        assert current.name not in pins, f"{path.name}: {current.name} pinned twice"
        pins[current.name] = current
    return pins


def torch_cpu_wheel() -> Path:
    """PyTorch's CPU-only wheel of the pinned torch, from TORCH_CPU_WHEELS; a clear failure when it is missing."""
    (requirement,) = [r for r in lock_inputs.requirements(TORCH_CPU) if r.startswith("torch==")]
    name = f"{requirement.replace('==', '-')}-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel = TORCH_CPU_WHEELS / name
    if not wheel.is_file():
        pytest.fail(
            f"no {wheel}: the {TORCH_CPU} tests need PyTorch's CPU-only wheel {name} (set TORCH_CPU_WHEELS to the "
            "folder that holds it; it is on PyTorch's CPU-only wheel index, not on PyPI)"
        )
    return wheel


def registry_env(**extra: str) -> dict[str, str]:
    """pip with no config file and no index, mirror or wheel folder of its own: only its default index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MINIGATE_", "VIRTUAL_ENV"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    if os.environ.get("PIP_CERT"):
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return env

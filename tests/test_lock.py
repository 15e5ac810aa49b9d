"""The image's lock files (deploy/requirements-*.lock): complete, hashed, current, and all the image installs.

These read the files: every requirement of pyproject.toml pinned with its sha256 hashes and no stale pin, the
torchcpu lock the cpu-convert one with PyTorch's CPU-only torch in place of PyPI's, the CUDA locks' engine, and a
Dockerfile builder stage that installs the locks and nothing else. Installing the locks, for real or with
`pip install --dry-run --platform`, is tests/test_lock_install.py.

PyTorch's CPU-only wheel is not on PyPI: the torchcpu test hashes it from TORCH_CPU_WHEELS (default /opt/wheels,
the folder scripts/lock.sh hashed it from) and fails, never skips, when it is not there.
"""

from __future__ import annotations

import hashlib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.lock_helpers import CUDA_ONLY, ROOT, TORCH_CPU, VARIANTS, lock_inputs, parse_lock, torch_cpu_wheel


@pytest.mark.parametrize("variant", VARIANTS)
def test_lock_pins_every_requirement_with_hashes(variant: str) -> None:
    path = lock_inputs.lock_path(variant)
    text = path.read_text()
    # No index, mirror or URL of any kind: where files come from is the builder's business, not the lock's.
    for needle in ("://", "--index-url", "--extra-index-url", "--find-links", "--trusted-host"):
        assert needle not in text, f"{path.name} names an index or URL ({needle}): scripts/lock.sh writes none"
    pins = parse_lock(path)
    inputs = [Requirement(r) for r in lock_inputs.requirements(variant)]
    for requirement in inputs:
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{path.name} does not pin {requirement}: run scripts/lock.sh"
        assert requirement.specifier.contains(Version(pin.version), prereleases=True), (
            f"{path.name} pins {pin.name}=={pin.version}, pyproject.toml asks for {requirement}: run scripts/lock.sh"
        )
    # The lock's own record of its direct requirements is exactly today's input: a requirement dropped from
    # pyproject.toml leaves no stale pin behind.
    direct = {name for name, pin in pins.items() if any(via.endswith(f"-r {variant}.in") for via in pin.via)}
    assert direct == {canonicalize_name(r.name) for r in inputs}, f"{path.name} is stale: run scripts/lock.sh"
    assert "torch" in pins if "-convert" in variant else "torch" not in pins


def test_the_torchcpu_lock_is_cpu_convert_with_the_cpu_only_torch() -> None:
    """The CPU-only torch, pinned to the wheel's sha256, in place of PyPI's; everything else pinned alike."""
    pypi, cpu = parse_lock(lock_inputs.lock_path("cpu-convert")), parse_lock(lock_inputs.lock_path(TORCH_CPU))
    torch = cpu["torch"]
    assert Version(torch.version).local == "cpu", f"{TORCH_CPU}: torch=={torch.version} is not a CPU-only build"
    assert Version(torch.version).public == pypi["torch"].version, (torch.version, pypi["torch"].version)
    digest = hashlib.sha256(torch_cpu_wheel().read_bytes()).hexdigest()
    assert torch.hashes == [digest], f"{TORCH_CPU} pins torch to {torch.hashes}, the wheel's sha256 is {digest}"
    cuda = sorted(name for name in cpu if CUDA_ONLY.fullmatch(name))
    assert not cuda, f"{TORCH_CPU} pins CUDA packages: {cuda}"
    # PyPI's torch does bring them (or this lock would be pointless), and they are all that is left out.
    assert {name for name in pypi if CUDA_ONLY.fullmatch(name)} == set(pypi) - set(cpu), set(pypi) ^ set(cpu)
    for name, pin in cpu.items():
        if name != "torch":
            assert (pin.version, pin.hashes) == (pypi[name].version, pypi[name].hashes), (
                f"{name}: {TORCH_CPU} and cpu-convert pin it differently: run scripts/lock.sh"
            )


def test_the_cuda_locks_swap_the_engine_for_its_cuda_build() -> None:
    cpu, cuda = parse_lock(lock_inputs.lock_path("cpu")), parse_lock(lock_inputs.lock_path("cuda"))
    assert "onnxruntime-genai" not in cuda and "onnxruntime" not in cuda
    assert cuda["onnxruntime-genai-cuda"].version == cpu["onnxruntime-genai"].version
    assert "onnxruntime-gpu" in cuda and "nvidia-cudnn-cu13" in cuda


def test_the_dockerfile_installs_only_the_locks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    builder = dockerfile.split("FROM ${PYTHON_IMAGE} AS builder", 1)[1].split("\nFROM ", 1)[0]
    assert "COPY deploy/install.sh deploy/requirements-*.lock ./deploy/" in builder
    runs = [line for line in builder.splitlines() if line.startswith("RUN ")]
    assert runs == ["RUN sh deploy/install.sh /opt/minigate deps", "RUN sh deploy/install.sh /opt/minigate minigate"]
    # The default build needs nothing but PyPI: PyPI's torch unless MINIGATE_TORCH=cpu is asked for.
    assert "ARG MINIGATE_TORCH=pypi\n" in builder
    assert "pip install" not in dockerfile.replace("`pip install --require-hashes --no-deps`", "")
    script = (ROOT / "deploy" / "install.sh").read_text()
    installs = [line.strip() for line in script.splitlines() if 'pip" install' in line]
    assert installs == [
        'if ! "$venv/bin/pip" install --require-hashes --no-deps -r "$lock"; then',
        '"$venv/bin/pip" install --no-deps --no-build-isolation --no-index .',
    ]
    assert "variant=$accelerator${extras:+-$extras}\n" in script and "variant=$variant-torchcpu\n" in script
    assert "lock=deploy/requirements-$variant.lock" in script
    for variant in VARIANTS:
        assert lock_inputs.lock_path(variant).is_file(), f"no lock for {variant}: run scripts/lock.sh"

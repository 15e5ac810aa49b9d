"""What each lock file is compiled from, read from pyproject.toml: the image's, and the test environment's.

    python3 deploy/lock_inputs.py VARIANT             prints that variant's requirements, one a line
    python3 deploy/lock_inputs.py --arches VARIANT    prints the machines its lock is made for (x86_64 aarch64)
    python3 deploy/lock_inputs.py --base VARIANT      prints the variant whose lock's pins it keeps (or nothing)

A variant is what deploy/install.sh's settings pick: MINIGATE_ACCELERATOR, then MINIGATE_EXTRAS when it is not
empty, then `torchcpu` when MINIGATE_TORCH is `cpu`; its lock is deploy/requirements-VARIANT.lock. The image's
are `cpu`, `cpu-convert`, `cuda`, `cuda-convert` and `cpu-convert-torchcpu`; `cpu-test` and `cpu-test-torchcpu`
are the test environment that .ci/run installs (the test extra, which names the convert extra).
The requirements are minigate's `dependencies`, the extra's (an extra naming `minigate[...]` brings those extras'
too), and the build backend (`build-system.requires`: minigate itself is installed with --no-build-isolation,
so setuptools comes from the lock too). The cuda variants swap onnxruntime-genai for onnxruntime-genai-cuda of
the same version and add onnxruntime-gpu with NVIDIA's CUDA and cuDNN wheels. A torchcpu variant asks for
PyTorch's CPU-only build of the pinned torch (`torch==X` becomes `torch==X+cpu`, the local version label of
PyTorch's CPU-only wheel index), which needs none of the CUDA packages that PyPI's Linux torch depends on; its
lock is for x86_64 only (the CPU-only wheel that scripts/lock.sh hashes) and keeps its base variant's pins. The
test locks keep cpu-convert's pins, so tests run with exactly the versions the image serves with.
scripts/lock.sh compiles these; tests/test_lock.py checks the locks against them.
Standard library only, so the lock script runs with any Python 3.11.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ACCELERATORS = ("cpu", "cuda")
EXTRAS = ("", "convert")
# MINIGATE_TORCH: "pypi" (the default: torch as PyPI has it) or "cpu" (PyTorch's CPU-only build, cpu only).
TORCH_BUILDS = ("pypi", "cpu")
TORCH_CPU_VARIANT = "cpu-convert-torchcpu"
TEST_VARIANT = "cpu-test"
TEST_TORCH_CPU_VARIANT = "cpu-test-torchcpu"
TORCH_CPU_VARIANTS = (TORCH_CPU_VARIANT, TEST_TORCH_CPU_VARIANT)
# In the order scripts/lock.sh writes them: each after the lock whose pins it keeps.
VARIANTS = (
    *(f"{accelerator}{'-' + extra if extra else ''}" for accelerator in ACCELERATORS for extra in EXTRAS),
    TORCH_CPU_VARIANT,
    TEST_VARIANT,
    TEST_TORCH_CPU_VARIANT,
)
CUDA_ADDITIONS = ("onnxruntime-gpu[cuda,cudnn]",)


def lock_path(variant: str) -> Path:
    return ROOT / "deploy" / f"requirements-{variant}.lock"


def _known(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
    return variant


def arches(variant: str) -> tuple[str, ...]:
    """The machines the variant's lock is made for: the cuda engine and the CPU-only torch wheel are x86_64 only."""
    if _known(variant).startswith("cuda") or variant in TORCH_CPU_VARIANTS:
        return ("x86_64",)
    return ("x86_64", "aarch64")


def base(variant: str) -> str | None:
    """The variant whose lock's pins this one keeps: a torchcpu lock its PyPI-torch twin's, cpu-test cpu-convert's."""
    if _known(variant) in TORCH_CPU_VARIANTS:
        return variant.removesuffix("-torchcpu")
    return "cpu-convert" if variant == TEST_VARIANT else None


def _name(requirement: str) -> str:
    """The normalised project name a requirement string starts with (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _extra(project: dict[str, Any], extra: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """An extra's requirements, with `minigate[other]` replaced by the other extras' own."""
    found: list[str] = []
    for requirement in project["optional-dependencies"][extra]:
        if _name(requirement) != _name(project["name"]):
            found.append(requirement)
            continue
        named = re.fullmatch(r"[^\[]*\[([^\]]*)\]\s*", requirement)
        if named is None:
            raise ValueError(f"extra {extra!r}: {requirement!r} names minigate without an extra")
        for other in (o.strip() for o in named[1].split(",")):
            if other in seen or other == extra:
                raise ValueError(f"extra {extra!r}: {requirement!r} names itself")
            found += [r for r in _extra(project, other, seen | {extra}) if r not in found]
    return found


def requirements(variant: str, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The variant's requirements: the build backend, minigate's dependencies and the extra's, as swapped."""
    torch_cpu = _known(variant) in TORCH_CPU_VARIANTS
    accelerator, _, extra = variant.removesuffix("-torchcpu").partition("-")
    data = tomllib.loads(pyproject.read_text())
    found = [*data["build-system"]["requires"], *data["project"]["dependencies"]]
    if extra:
        found += _extra(data["project"], extra)
    if accelerator == "cuda":
        genai = [r for r in found if _name(r) == "onnxruntime-genai"]
        if len(genai) != 1 or "==" not in genai[0]:
            raise ValueError(f"the cuda swap needs one pinned onnxruntime-genai in pyproject.toml, found {genai}")
        found = [r for r in found if r not in genai]
        found += [genai[0].replace(genai[0][: genai[0].index("==")], "onnxruntime-genai-cuda", 1), *CUDA_ADDITIONS]
    if torch_cpu:
        torch = [r for r in found if _name(r) == "torch"]
        pinned = re.fullmatch(r"\s*torch\s*==\s*([0-9][0-9.]*)\s*", torch[0]) if len(torch) == 1 else None
        if pinned is None:
            raise ValueError(f"the CPU-only torch needs one `torch==VERSION` in pyproject.toml, found {torch}")
        found = [r if r not in torch else f"torch=={pinned[1]}+cpu" for r in found]
    return found


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--arches":
        print(*arches(args[1]))
    elif len(args) == 2 and args[0] == "--base":
        print(base(args[1]) or "")
    elif len(args) == 1:
        print("\n".join(requirements(args[0])))
    else:
        sys.exit(f"usage: {sys.argv[0]} [--arches|--base] {{{','.join(VARIANTS)}}}")

"""What each of the image's lock files is compiled from, read from pyproject.toml.

    python3 deploy/lock_inputs.py VARIANT    prints that variant's requirements, one a line

A variant is what the Dockerfile's build arguments pick: MINIGATE_ACCELERATOR, then MINIGATE_EXTRAS when it is
not empty, so `cpu`, `cpu-convert`, `cuda` and `cuda-convert`; its lock is deploy/requirements-VARIANT.lock.
The requirements are minigate's `dependencies`, the extra's, and the build backend (`build-system.requires`:
the Dockerfile installs minigate itself with --no-build-isolation, so setuptools comes from the lock too). The
cuda variants swap onnxruntime-genai for onnxruntime-genai-cuda of the same version and add onnxruntime-gpu with
NVIDIA's CUDA and cuDNN wheels. scripts/lock.sh compiles these; tests/test_lock.py checks the locks against them.
Standard library only, so the lock script runs with any Python 3.11.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCELERATORS = ("cpu", "cuda")
EXTRAS = ("", "convert")
VARIANTS = tuple(f"{accelerator}{'-' + extra if extra else ''}" for accelerator in ACCELERATORS for extra in EXTRAS)
CUDA_ADDITIONS = ("onnxruntime-gpu[cuda,cudnn]",)


def lock_path(variant: str) -> Path:
    return ROOT / "deploy" / f"requirements-{variant}.lock"


def _name(requirement: str) -> str:
    """The normalised project name a requirement string starts with (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(variant: str, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
    accelerator, _, extra = variant.partition("-")
    data = tomllib.loads(pyproject.read_text())
    found = [*data["build-system"]["requires"], *data["project"]["dependencies"]]
    if extra:
        found += data["project"]["optional-dependencies"][extra]
    if accelerator == "cuda":
        genai = [r for r in found if _name(r) == "onnxruntime-genai"]
        if len(genai) != 1 or "==" not in genai[0]:
            raise ValueError(f"the cuda swap needs one pinned onnxruntime-genai in pyproject.toml, found {genai}")
        found = [r for r in found if r not in genai]
        found += [genai[0].replace(genai[0][: genai[0].index("==")], "onnxruntime-genai-cuda", 1), *CUDA_ADDITIONS]
    return found


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(VARIANTS)}}}")
    print("\n".join(requirements(sys.argv[1])))

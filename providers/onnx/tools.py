"""What model conversion shares: its errors, the precisions and execution providers, the optional tools.

Kept apart from :mod:`minigate.providers.onnx.convert` so that the hub and wheel modules can raise the same errors
without importing the whole conversion pipeline.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "CONVERT_TOOLS",
    "EXECUTION_PROVIDERS",
    "PRECISIONS",
    "ConvertError",
    "DownloadError",
    "MissingToolsError",
    "SourceError",
    "check_combination",
    "default_cache_dir",
    "name_from",
    "require_tools",
]

PRECISIONS = ("int4", "int8", "fp16", "fp32")
EXECUTION_PROVIDERS = ("cpu", "cuda", "dml")
CONVERT_TOOLS = ("torch", "transformers", "onnx", "onnx_ir", "gguf", "safetensors", "accelerate")
INSTALL_HINT = (
    "install the 'convert' extra: pip install 'minigate[convert]' "
    "(or: pip install torch==2.13.0 transformers onnx onnx_ir gguf safetensors accelerate)"
)


class ConvertError(RuntimeError):
    """A conversion or import step failed; the message says which and why."""


class MissingToolsError(ConvertError):
    """The conversion tools are not installed; the message names the extra to install."""


class SourceError(ConvertError):
    """The source to pull is refused: an unknown name or bad spec, no such repository, revision, package or
    file, no access, or downloaded files that do not match what the source lists."""


class DownloadError(ConvertError):
    """The source could not be reached, or a transfer failed (network, server errors): worth retrying."""


# What the model builder accepts (its own list): fp16 is for GPUs only.
_VALID = {"cpu": ("int4", "int8", "fp32"), "cuda": ("int4", "int8", "fp16", "fp32"), "dml": ("int4", "fp16")}


def check_combination(precision: str, execution_provider: str) -> None:
    """Refuse a precision the builder cannot make for the execution provider (e.g. fp16 on CPU)."""
    valid = _VALID.get(execution_provider, ())
    if precision not in valid:
        raise ConvertError(
            f"the model builder makes {precision} models only for "
            f"{', '.join(ep for ep, ps in _VALID.items() if precision in ps) or 'no provider'}; "
            f"for {execution_provider} choose {', '.join(valid)}"
        )


def require_tools(names: tuple[str, ...] = CONVERT_TOOLS) -> dict[str, Any]:
    """Import the conversion tools, or raise :class:`MissingToolsError` naming the extra to install."""
    modules: dict[str, Any] = {}
    missing = []
    for name in names:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingToolsError(f"model conversion needs {', '.join(missing)}, which are not installed; {INSTALL_HINT}")
    return modules


def default_cache_dir() -> Path:
    """Where downloaded wheels and temporary build files go: ``$MINIGATE_CACHE`` or ``~/.cache/minigate``."""
    return Path(os.environ.get("MINIGATE_CACHE") or Path.home() / ".cache" / "minigate")


def name_from(text: str) -> str:
    """A model name made from a file stem or a repository name (lower case, unsafe characters as '-')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).lower()
    name = re.sub(r"\.{2,}", ".", name).strip("-._")[:80].rstrip("-._")
    return name or "model"

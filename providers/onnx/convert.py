"""Make onnxruntime-genai models from files on disk: the model builder, the test load, imports into the models folder.

GGUF -> Hugging Face folder (:mod:`minigate.providers.onnx.gguf`) -> onnxruntime-genai model (:func:`build_onnx`), made
in a :func:`staging` folder, validated and renamed into place. The conversion tools are the ``convert`` extra, imported
lazily; the commands are :mod:`minigate.providers.onnx.cli`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from minigate.providers.onnx.gguf import fix_tokenizer_config, gguf_to_hf
from minigate.providers.onnx.progress import Progress
from minigate.providers.onnx.store import (
    ModelStoreError,
    check_name,
    model_path,
    read_manifest,
    target_name,
    validate_model_dir,
    verify_manifest,
    write_manifest,
)
from minigate.providers.onnx.tools import (
    EXECUTION_PROVIDERS,
    PRECISIONS,
    ConvertError,
    check_combination,
    require_tools,
)

__all__ = ["build_onnx", "copy_generation_config", "import_model", "precision_for", "probe_load", "staging"]


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
    copy_generation_config(hf_dir, out_dir)


def copy_generation_config(hf_dir: Path, out_dir: Path) -> None:
    """Keep the source's ``generation_config.json`` beside the model (the builder does not copy it): the worker
    takes each request's sampling defaults and answer cap from it."""
    source = hf_dir / "generation_config.json"
    if source.is_file() and not (out_dir / source.name).exists():
        shutil.copyfile(source, out_dir / source.name)


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
def staging(
    models_dir: Path, name: str, force: bool, check: Callable[[Path], object] | None = None
) -> Iterator[tuple[Path, Path]]:
    """A temporary folder inside ``models_dir`` and the final destination; moves the result in on success, once
    ``check`` (default: an onnxruntime-genai model folder's check) accepts it."""
    dest = model_path(models_dir, name)
    if dest.exists() and not force:
        raise ModelStoreError(f"model {name!r} already exists in {models_dir} (use force to replace it)")
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=f".staging-{name}-") as tmp:
        out = Path(tmp) / name
        yield Path(tmp), out
        (check or validate_model_dir)(out)
        if dest.exists():
            old = Path(tmp) / ".replaced"
            dest.rename(old)
        out.rename(dest)


def import_model(
    source: str | os.PathLike[str],
    models_dir: str | os.PathLike[str],
    name: str,
    *,
    precision: str | None = None,
    execution_provider: str = "cpu",
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Import a model from disk into ``models_dir/name``; return its folder.

    ``source`` may be an onnxruntime-genai folder (validated, then copied file by file), a Hugging Face
    folder (``config.json`` and weights; built with the model builder) or a ``.gguf`` file (converted first).
    ``precision`` (default: the ``@`` suffix of ``name``, else int4 for builds) is what a build makes, and what
    a ready folder is recorded as when its own manifest says nothing (one that says otherwise is refused).
    Where ``name`` already holds the model in another precision, the import goes to ``name@precision``.
    """
    src = Path(source).resolve()
    progress = progress or Progress(3)
    precision = precision_for(name, precision)
    name = target_name(models_dir, name, precision)
    build = precision or "int4"
    with staging(Path(models_dir), name, force) as (tmp, out):
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
            built = (manifest or {}).get("precision") or precision
            if precision and built != precision:
                raise ModelStoreError(f"{src} holds a {built} model, not {precision}")
            kind = "onnxruntime-genai-folder"
        elif src.is_dir() and (src / "config.json").is_file():
            progress.stage(f"Hugging Face folder {src} -> onnxruntime-genai {build}")
            build_onnx(src, out, build, execution_provider, progress)
            kind, built = "hf-folder", build
        elif src.is_file() and src.suffix == ".gguf":
            progress.stage(f"GGUF {src.name} -> Hugging Face folder")
            hf_dir = gguf_to_hf(src, tmp / "hf", progress)
            progress.stage(f"Hugging Face -> onnxruntime-genai {build}")
            build_onnx(hf_dir, out, build, execution_provider, progress)
            kind, built = "gguf-file", build
        else:
            raise ModelStoreError(f"{src} is neither an onnxruntime-genai folder, a Hugging Face folder nor a .gguf")
        progress.stage("manifest and a test load")
        write_manifest(out, source={"kind": kind, "path": str(src)}, precision=built)
        probe_load(out)
    progress.done(f"{name} in {model_path(models_dir, name)}")
    return model_path(models_dir, name)


def precision_for(name: str, precision: str | None) -> str | None:
    """The precision an import of ``name`` makes: ``precision``, else the ``@`` suffix of ``name``; both must agree."""
    check_name(name)
    suffix = name.partition("@")[2] or None
    if suffix and precision and suffix != precision:
        raise ModelStoreError(f"{name!r} names precision {suffix}, but {precision} was asked for")
    return precision or suffix

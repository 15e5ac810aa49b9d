"""Pull models from a Hugging Face hub repository: ``hf:OWNER/REPO[@REVISION]``.

:func:`plan_pull` decides what the repository holds (an onnxruntime-genai folder, a transformers model or a GGUF);
:func:`download` fetches only those files and checks each against the size and hash the hub listed.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from minigate.providers.onnx.hub_errors import translate
from minigate.providers.onnx.progress import Progress
from minigate.providers.onnx.store import _allowed_file
from minigate.providers.onnx.tools import ConvertError, MissingToolsError, SourceError, name_from

__all__ = [
    "HubFile",
    "HubPlan",
    "HubSource",
    "default_name",
    "download",
    "parse_hf_source",
    "plan_pull",
    "translate_errors",
    "verify",
]

# Files a Hugging Face model folder needs for the builder: config, tokenizer, weights (safetensors only).
_HF_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja", ".tiktoken")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


@dataclass(frozen=True, slots=True)
class HubSource:
    """A repository and an optional revision (branch, tag or commit), as in ``hf:OWNER/REPO@REVISION``."""

    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision}" if self.revision else self.repo


@dataclass(frozen=True, slots=True)
class HubFile:
    """One file of the repository as the hub lists it: size, sha256 (LFS files) and git blob id."""

    path: str
    size: int | None
    sha256: str | None = None
    blob_id: str | None = None


@dataclass(frozen=True, slots=True)
class HubPlan:
    """What to download from a repository and how to turn it into a model."""

    source: HubSource
    commit: str
    kind: str  # "onnxruntime-genai", "transformers" or "gguf"
    root: str  # the model's folder inside the repository ("" for the root)
    files: tuple[HubFile, ...]
    skipped: tuple[str, ...] = ()
    endpoint: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def gguf(self) -> str | None:
        return self.files[0].path if self.kind == "gguf" else None


def parse_hf_source(spec: str) -> HubSource:
    """``OWNER/REPO[@REVISION]`` (the part after ``hf:``) as a :class:`HubSource`; refuses anything else."""
    repo, _, revision = spec.partition("@")
    if not _REPO.match(repo) or ".." in repo:
        raise SourceError(f"invalid hub repository {repo!r}: write hf:OWNER/REPO or hf:OWNER/REPO@REVISION")
    if "@" in spec and (not _REVISION.match(revision) or ".." in revision.split("/")):
        raise SourceError(f"invalid revision {revision!r}: a branch, tag or commit hash")
    return HubSource(repo, revision or None)


def _clean_subfolder(subfolder: str | None) -> str:
    if not subfolder:
        return ""
    parts = PurePosixPath(subfolder.replace("\\", "/")).parts
    if subfolder.startswith("/") or any(p in ("..", ".") for p in parts) or not parts:
        raise SourceError(f"invalid subfolder {subfolder!r}: a folder inside the repository, like cpu-int4")
    return "/".join(parts)


def _parent(path: str) -> str:
    parent = str(PurePosixPath(path).parent)
    return "" if parent == "." else parent


def _endpoint() -> str | None:
    """``HF_ENDPOINT`` read now (huggingface_hub reads it once, at import), or None for the library default."""
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _where(endpoint: str | None) -> str:
    return endpoint or "the Hugging Face hub"


def _hub() -> Any:
    """``huggingface_hub``, or :class:`MissingToolsError` naming what to install."""
    # minigate is a private gateway: no telemetry fields in the user agent (and no extra registry request)
    # unless the user asked for them. Effective only before huggingface_hub's first import in this process.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
        import huggingface_hub.utils
    except ImportError as exc:
        raise MissingToolsError(
            "pulling from a model hub needs huggingface_hub, which is not installed; "
            "pip install huggingface_hub (it comes with the 'convert' extra)"
        ) from exc
    return huggingface_hub


def plan_pull(
    source: HubSource, *, subfolder: str | None = None, file: str | None = None, timeout: float = 30.0
) -> HubPlan:
    """Ask the hub what ``source`` holds (one request) and decide what to download; see the module docstring."""
    hub = _hub()
    root = _clean_subfolder(subfolder)
    endpoint = _endpoint()
    with translate_errors(source, endpoint):
        if hub.constants.HF_HUB_OFFLINE:
            raise hub.errors.OfflineModeIsEnabled("offline mode")
        info = hub.HfApi(endpoint=endpoint).model_info(
            source.repo, revision=source.revision, files_metadata=True, timeout=timeout
        )
    files: dict[str, HubFile] = {}
    for sibling in info.siblings or []:
        parts = PurePosixPath(sibling.rfilename).parts
        if not parts or sibling.rfilename.startswith("/") or "\\" in sibling.rfilename or ".." in parts:
            raise SourceError(f"{source} lists an unsafe file path {sibling.rfilename!r}: refused")
        lfs = sibling.lfs
        files[sibling.rfilename] = HubFile(
            sibling.rfilename,
            lfs.size if lfs else sibling.size,
            lfs.sha256 if lfs else None,
            sibling.blob_id,
        )
    commit = info.sha or source.revision or "main"
    if root and not any(p.startswith(root + "/") for p in files):
        raise SourceError(f"{source} has no folder {root!r}")
    kind, root, chosen = _choose(source, files, root, file)
    if kind == "onnxruntime-genai":
        keep = [p for p in chosen if _allowed_file(PurePosixPath(p).name)]
    elif kind == "transformers":
        keep = [p for p in chosen if p.endswith(_HF_SUFFIXES)]
    else:
        keep = chosen
    skipped = tuple(p for p in chosen if p not in keep)
    return HubPlan(source, commit, kind, root, tuple(files[p] for p in sorted(keep)), skipped, endpoint)


def _choose(source: HubSource, files: dict[str, HubFile], root: str, file: str | None) -> tuple[str, str, list[str]]:
    """The kind of model, its folder and the candidate files (the folder's direct children, or the GGUF)."""

    def children(folder: str) -> list[str]:
        return [p for p in files if _parent(p) == folder]

    def under(folder: str) -> list[str]:
        return [p for p in files if not folder or p.startswith(folder + "/")]

    def listing(paths: list[str]) -> str:
        return ", ".join(paths[:12]) + (f" and {len(paths) - 12} more" if len(paths) > 12 else "")

    ggufs = sorted(p for p in under(root) if p.lower().endswith(".gguf"))
    if file:
        wanted = file.strip("/")
        matches = [wanted] if wanted in files else [p for p in ggufs if PurePosixPath(p).name == wanted]
        if not wanted.lower().endswith(".gguf"):
            raise SourceError(f"--file names a .gguf file to convert, not {file!r}")
        if not matches:
            found = f"; its .gguf files: {listing(ggufs)}" if ggufs else "; it has no .gguf file"
            raise SourceError(f"{source} has no file {file!r}{found}")
        if len(matches) > 1:
            raise SourceError(f"{file!r} matches several files of {source}: {listing(matches)}; give its path")
        return "gguf", _parent(matches[0]), matches
    names = {PurePosixPath(p).name for p in children(root)}
    where = f"{source} (folder {root})" if root else str(source)
    if "genai_config.json" in names:
        return "onnxruntime-genai", root, children(root)
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        return "transformers", root, children(root)
    if "config.json" in names and any(n.endswith(_PICKLE_SUFFIXES) for n in names):
        raise SourceError(
            f"{where} has PyTorch pickle weights only; minigate converts .safetensors weights only "
            "(pickle files can run code when loaded)"
        )
    if len(ggufs) == 1:
        return "gguf", _parent(ggufs[0]), ggufs
    if ggufs:
        raise SourceError(f"{where} holds {len(ggufs)} .gguf files; choose one with --file: {listing(ggufs)}")
    folders = sorted({_parent(p) for p in under(root) if PurePosixPath(p).name == "genai_config.json"})
    if len(folders) == 1:
        return "onnxruntime-genai", folders[0], children(folders[0])
    if folders:
        raise SourceError(
            f"{where} holds {len(folders)} onnxruntime-genai models; choose one with --subfolder: {listing(folders)}"
        )
    raise SourceError(
        f"{where} holds neither an onnxruntime-genai model (genai_config.json), a Hugging Face model "
        "(config.json with .safetensors weights) nor a .gguf file"
    )


def default_name(plan: HubPlan) -> str:
    """A model name for ``plan`` when none is given: the GGUF file's stem, else the repository's name."""
    return name_from(PurePosixPath(plan.gguf).stem if plan.gguf else plan.source.repo.split("/")[1])


class _Watcher:
    """Reports the bytes under a folder (finished and ``.incomplete`` files) as percent of a known total,
    from a thread, while huggingface_hub downloads into it with its own progress bars off."""

    def __init__(self, folder: Path, total: int, progress: Progress, interval: float = 0.5) -> None:
        self.folder, self.total, self.progress, self.interval = folder, total, progress, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-download-progress", daemon=True)

    def _bytes(self) -> int:
        done = 0
        for dirpath, _dirs, names in os.walk(self.folder):
            for name in names:
                with contextlib.suppress(OSError):
                    done += os.stat(os.path.join(dirpath, name)).st_size
        return done

    def report(self) -> None:
        done = min(self._bytes(), self.total)
        self.progress.percent(done, self.total, f"{done / 2**20:.1f} of {self.total / 2**20:.1f} MiB")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def __enter__(self) -> _Watcher:
        if self.total:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@contextlib.contextmanager
def _quiet_hub_bars(hub: Any) -> Iterator[None]:
    """Turn huggingface_hub's own tqdm bars off (the watcher reports instead), restoring them afterwards."""
    utils = hub.utils
    was_disabled = utils.are_progress_bars_disabled()
    utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            utils.enable_progress_bars()


def download(plan: HubPlan, dest: Path, progress: Progress) -> Path:
    """Download ``plan``'s files into ``dest`` (a new folder) and check them; return the model's folder in it.

    Works in ``dest`` only: huggingface_hub's bookkeeping (``.cache``) and its cache folder go beside the
    files and are removed afterwards, so nothing is written to the user's hub cache.
    """
    hub = _hub()
    dest.mkdir(parents=True, exist_ok=False)
    cache = dest.parent / (dest.name + ".hub-cache")
    progress.info(f"{len(plan.files)} files, {plan.total_bytes / 2**20:.1f} MiB, commit {plan.commit[:12]}")
    if plan.skipped:
        shown = ", ".join(plan.skipped[:6]) + (" ..." if len(plan.skipped) > 6 else "")
        progress.info(f"not downloading {len(plan.skipped)} files a model does not need: {shown}")
    with translate_errors(plan.source, plan.endpoint), _quiet_hub_bars(hub):
        with _Watcher(dest, plan.total_bytes, progress) as watcher:
            hub.snapshot_download(
                plan.source.repo,
                revision=plan.commit,
                local_dir=dest,
                cache_dir=cache,
                allow_patterns=[glob.escape(f.path) for f in plan.files],
                endpoint=plan.endpoint,
                max_workers=4,
            )
        watcher.report()
    shutil.rmtree(dest / ".cache", ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return dest / plan.root if plan.root else dest


def verify(plan: HubPlan, dest: Path, progress: Progress) -> None:
    """Check each downloaded file against the hub's listing: present, same size, same sha256 (LFS files)
    or git blob sha1 (small files). Raises :class:`SourceError` naming the first file that differs."""
    total = sum(f.size or 0 for f in plan.files if f.sha256 or f.blob_id) or 1
    done = 0
    for item in plan.files:
        path = dest / item.path
        if not path.is_file() or path.is_symlink():
            raise SourceError(f"{item.path} of {plan.source} is missing after the download")
        size = path.stat().st_size
        if item.size is not None and size != item.size:
            raise SourceError(
                f"{item.path} of {plan.source} arrived with {size} bytes, the hub lists {item.size}: "
                "refused (truncated or altered)"
            )
        if item.sha256:
            digest = hashlib.sha256()
            expected = item.sha256.lower()
        elif item.blob_id and len(item.blob_id) == 40:
            digest = hashlib.sha1(usedforsecurity=False)  # git's blob id: sha1 of "blob <size>\0" + content
            digest.update(b"blob %d\0" % size)
            expected = item.blob_id.lower()
        else:
            continue
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
                done += len(block)
                progress.percent(done, total, item.path)
        if digest.hexdigest() != expected:
            kind = "sha256" if item.sha256 else "git blob id"
            raise SourceError(f"{item.path} of {plan.source} does not match its {kind} on the hub: refused")


@contextlib.contextmanager
def translate_errors(source: HubSource, endpoint: str | None) -> Iterator[None]:
    """Turn huggingface_hub's and the network's exceptions into :class:`SourceError` / :class:`DownloadError`."""
    try:
        yield
    except ConvertError:
        raise
    except Exception as exc:
        translated = translate(exc, _hub().errors, source, _where(endpoint))
        if translated is None:
            raise
        raise translated from exc

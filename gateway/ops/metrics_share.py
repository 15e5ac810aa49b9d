"""``/metrics`` across the processes of ``minigate serve --workers N``: each labelled with its worker number.

A scrape reaches one process, so each process writes its own exposition to ``metrics-<i>.prom`` in the
supervisor's private runtime folder (every few seconds and on each scrape), and the scraped one merges every
file: the samples of worker ``i`` get the label ``worker="i"``, under one ``# HELP``/``# TYPE`` per family.
Labelled rather than summed: counters and histograms sum fine in PromQL (``sum without (worker)``), gauges such
as a loaded model's memory would not, and a worker started again resets only its own series.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["merge", "publish"]

_PREFIX, _SUFFIX = "metrics-", ".prom"


def publish(folder: Path, worker: int, body: bytes) -> None:
    """Write this process's exposition (whole: written aside, then renamed)."""
    target = folder / f"{_PREFIX}{worker}{_SUFFIX}"
    aside = folder / f".{_PREFIX}{worker}.{os.getpid()}"
    aside.write_bytes(body)
    os.replace(aside, target)


def _labelled(sample: str, worker: str) -> str:
    name_end = min((i for i in (sample.find("{"), sample.find(" ")) if i >= 0), default=len(sample))
    if sample[name_end : name_end + 1] == "{":
        rest = sample[name_end + 1 :]
        joiner = "" if rest.startswith("}") else ","
        return f'{sample[:name_end]}{{worker="{worker}"{joiner}{rest}'
    return f'{sample[:name_end]}{{worker="{worker}"}}{sample[name_end:]}'


def merge(folder: Path, worker: int, own: bytes) -> bytes:
    """Every worker's metrics (``own`` for this one, the files for the others), labelled by worker."""
    bodies = {worker: own.decode()}
    for path in folder.glob(f"{_PREFIX}*{_SUFFIX}"):
        name = path.name[len(_PREFIX) : -len(_SUFFIX)]
        if name.isdigit() and int(name) != worker:
            with contextlib.suppress(OSError):
                bodies[int(name)] = path.read_text()
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for number in sorted(bodies):
        family = ""
        for line in bodies[number].splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                family = parts[2] if len(parts) > 2 else family
                if family not in headers:
                    headers[family], samples[family] = [], []
                if line not in headers[family]:
                    headers[family].append(line)
            elif line.strip():
                samples.setdefault(family, []).append(_labelled(line, str(number)))
                headers.setdefault(family, [])
    out = [line for family in headers for line in (*headers[family], *samples.get(family, []))]
    return ("\n".join(out) + "\n").encode()

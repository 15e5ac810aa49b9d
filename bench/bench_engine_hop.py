#!/usr/bin/env python
"""What the engine host's extra hop costs a local model call (``serve --workers N``), side by side in one run.

Run from the repository root with the project's venv active (about 30 s)::

    python bench/bench_engine_hop.py MODELS_DIR [MODEL] [--n 200]

MODELS_DIR holds MODEL (default ``tiny``, e.g. a copy of the tests' tiny model; any local model works). Two
providers on the same model in one process: one with its own worker process (the pipe, as ``--workers 1``), one
attached to an :class:`EngineHost` over its unix socket (as each process of ``--workers N``). Sequential calls,
alternating between the two, each a chat completion of ``max_tokens`` 1 and, separately, a stream of 32 tokens:
p50/p99 of the whole call, and the difference. Printed with /proc/loadavg.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from minigate.providers.base import ProviderRequest
from minigate.providers.onnx.engine_host import EngineHost
from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig


def request(model: str, tokens: int, stream: bool) -> ProviderRequest:
    payload = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": tokens}
    return ProviderRequest("chat/completions", model, payload, stream, time.monotonic() + 60)


async def call(provider: OnnxProvider, model: str, tokens: int, stream: bool) -> float:
    start = time.perf_counter()
    if stream:
        chunks = await provider.open_stream(request(model, tokens, True))
        try:
            async for _ in chunks:
                pass
        finally:
            await chunks.aclose()
    else:
        await provider.complete(request(model, tokens, False))
    return (time.perf_counter() - start) * 1e3


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(models_dir: Path, model: str, n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="minigate-hop-") as folder:
        host = EngineHost(Path(folder) / "engines.sock")
        await host.start()
        config = OnnxProviderConfig(models_dir=str(models_dir), idle_ttl=None)
        own = OnnxProvider("own", config)
        shared = OnnxProvider("shared", config, engine_host=str(host.path))
        try:
            for provider in (own, shared):
                await provider.start()
                await provider.load(model)
            for label, tokens, stream in (("JSON, 1 token", 1, False), ("stream, 32 tokens", 32, True)):
                times: dict[str, list[float]] = {"pipe": [], "host": []}
                for i in range(n + 10):
                    order = [("pipe", own), ("host", shared)]
                    for name, provider in order if i % 2 else reversed(order):
                        took = await call(provider, model, tokens, stream)
                        if i >= 10:
                            times[name].append(took)
                p50 = {k: pct(v, 50) for k, v in times.items()}
                p99 = {k: pct(v, 99) for k, v in times.items()}
                print(
                    f"{label}: own worker p50 {p50['pipe']:.3f} ms p99 {p99['pipe']:.3f} ms; through the host"
                    f" p50 {p50['host']:.3f} ms p99 {p99['host']:.3f} ms; added p50 {p50['host'] - p50['pipe']:+.3f} ms"
                    f" (n={n})"
                )
        finally:
            await own.close()
            await shared.close()
            await host.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models_dir", type=Path)
    parser.add_argument("model", nargs="?", default="tiny")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    print("load average:", " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    asyncio.run(run(args.models_dir, args.model, args.n))
    print("load average:", " ".join(Path("/proc/loadavg").read_text().split()[:3]))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What the Responses and Messages translations add: the same answer through each /v1 protocol, side by side.

Run from the repository root with the project's venv active (about 60 s; --quick about 25 s)::

    python bench/bench_protocols.py [--quick] [--json results.json]

One fake upstream (``python -m tests.fakes.upstream``, 8 words at once) and one gateway (``minigate serve``,
default agent -> the upstream), all on 127.0.0.1. Sequential keep-alive requests at concurrency 1, the cases
interleaved in alternating order so that noise hits them all: the upstream directly (the floor), then through
the gateway as chat completions, Responses (``store`` false, as agents send it, and stored, the default) and
Anthropic Messages. For JSON the figure is the whole answer; for streams the first content delta (the first
frame carrying the upstream's "tok0") and the whole stream. Reported: p50/p99 per case, each protocol's
difference from chat completions at p50 (target: within 0.3 ms), and the gateway's addition over direct.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_gateway import interleaved, pct, start_gateway, start_upstream
from procs import HEADERS, HOST, Proc, stop

TARGET_MS = 0.3
MESSAGES = [{"role": "user", "content": "Say hello"}]


def payloads(stream: bool) -> dict[str, tuple[str, bytes]]:
    """Each case: (path, body)."""
    chat = {"model": "default", "messages": MESSAGES, "stream": stream}
    responses = {"model": "default", "input": "Say hello", "stream": stream}
    messages = {"model": "default", "max_tokens": 64, "messages": MESSAGES, "stream": stream}
    return {
        "direct": ("/v1/chat/completions", json.dumps({**chat, "model": "m"}).encode()),
        "chat": ("/v1/chat/completions", json.dumps(chat).encode()),
        "responses": ("/v1/responses", json.dumps({**responses, "store": False}).encode()),
        "responses stored": ("/v1/responses", json.dumps(responses).encode()),
        "messages": ("/v1/messages", json.dumps(messages).encode()),
    }


async def _one(session: Any, url: str, payload: bytes, stream: bool) -> tuple[float, float]:
    """(ms to the first content delta, or the whole JSON answer; ms to the end of the answer)."""
    t0 = time.perf_counter()
    async with session.post(url, data=payload, headers=HEADERS) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}: {(await resp.read())[:300]!r}")
        if not stream:
            await resp.read()
            done = (time.perf_counter() - t0) * 1e3
            return done, done
        first = 0.0
        async for line in resp.content:
            if not first and b"tok0" in line:
                first = (time.perf_counter() - t0) * 1e3
        if not first:
            raise RuntimeError(f"{url}: the stream carried no content")
        return first, (time.perf_counter() - t0) * 1e3


async def measure(ports: dict[str, int], stream: bool, n: int, warm: int, budget: float) -> Any:
    """Every case of :func:`payloads`, interleaved (``bench_gateway.interleaved``)."""
    cases = {
        name: (f"http://{HOST}:{ports['upstream' if name == 'direct' else 'gateway']}{path}", body)
        for name, (path, body) in payloads(stream).items()
    }
    return await interleaved(cases, n, warm, stream, budget, _one)


def summarize(samples: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        first, whole = [v[0] for v in values], [v[1] for v in values]
        out[name] = {"p50": pct(first, 50), "p99": pct(first, 99), "end_p50": pct(whole, 50), "n": len(values)}
    return out


def run(quick: bool) -> dict[str, Any]:
    n = 150 if quick else 400
    res: dict[str, Any] = {"quick": quick}
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="minigate-bench-protocols-") as tmpname:
        tmp = Path(tmpname)
        try:
            upstream = start_upstream(tmp, "fast", 8, 0.0, procs)
            _, gport, _ = start_gateway(tmp, {"fast": upstream, "paced": upstream}, procs, None)
            ports = {"upstream": upstream, "gateway": gport}
            for kind, stream in (("json", False), ("stream", True)):
                res[kind] = summarize(asyncio.run(measure(ports, stream, n, 40, 150)))
        finally:
            for proc in reversed(procs):
                stop(proc)
    return res


def report(res: dict[str, Any]) -> dict[str, bool]:
    verdicts: dict[str, bool] = {}
    header = ("case", "p50 ms", "p99 ms", "added p50", "vs chat p50", "end p50 ms", "result")
    rows: list[tuple[str, ...]] = [header]
    for kind, label in (("json", "JSON answer"), ("stream", "stream, first content")):
        r = res[kind]
        for name, s in r.items():
            added = s["p50"] - r["direct"]["p50"]
            versus = s["p50"] - r["chat"]["p50"]
            target = name in ("responses", "responses stored", "messages")
            ok = versus <= TARGET_MS if target else None
            if ok is not None:
                verdicts[f"{label}: {name}"] = ok
            cells = (
                f"{s['p50']:.3f}",
                f"{s['p99']:.3f}",
                f"{added:+.3f}",
                f"{versus:+.3f}" if name != "direct" else "",
            )
            verdict = "" if ok is None else ("PASS" if ok else "FAIL")
            rows.append((f"{label}: {name} (n={s['n']})", *cells, f"{s['end_p50']:.3f}", verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    rows.insert(1, tuple("-" * w for w in widths))
    for r in rows:
        print("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]))
    print(f"\n{sum(verdicts.values())}/{len(verdicts)} within {TARGET_MS} ms of chat completions at p50")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description="added latency of /v1/responses and /v1/messages (see the docstring)")
    parser.add_argument("--quick", action="store_true", help="fewer requests (about 25 s)")
    parser.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    args = parser.parse_args()
    if importlib.util.find_spec("uvloop"):
        importlib.import_module("uvloop").install()
    res = run(args.quick)
    res["verdicts"] = report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Load benchmark: 1,000 concurrent paced streams straight to a fake upstream, through a raw TCP pipe and
through minigate; a soak.

Run from the repository root with the project's venv (about a minute; a soak as long as it is asked to run)::

    python bench/bench_load.py [--streams 1000] [--chunks 64] [--interval 0.05] [--rounds 2] [--json FILE]
    nohup python bench/bench_load.py --rounds 0 --soak-seconds 600 --rate 30 --json soak.json > soak.log 2>&1 &
    python bench/bench_load.py --gateway-root /path/to/copy   # the gateway from another copy of the code
    python bench/bench_load.py --baseline-root /path/to/copy  # and, in each round, that copy's gateway too
    python bench/bench_load.py --gateways 2   # two gateway processes (one data folder), streams alternate
    python bench/bench_load.py --no-floor     # without the floor phase (direct and gateway only)

Everything is on 127.0.0.1, each part in its own process: the fake upstream (``python -m tests.fakes.upstream
--stamp``: each streamed word carries the time.time_ns() at which it was sent) and the gateway (``minigate
serve``, temporary config and data folder, agent ``default`` -> the fake; it stores a usage row per request),
and the floor (``bench/relay_floor.py``: a raw TCP pipe on uvloop to the upstream that does no HTTP work, the
least any Python relay adds here). The load client is this process: aiohttp on uvloop, one connector allowing
every stream at once.

Burst rounds (``--rounds``; the order of the phases rotates per round, so drift hits all): ``--streams``
streams started evenly over ``--ramp`` s (so all are open at once: a stream lasts chunks x interval) straight
to the upstream ("direct", the baseline), through the floor ("floor", same body; ``--no-floor`` skips it) and
through the gateway. For every chunk the client records arrival - send time; per phase: p50/p99/max of that,
streams completed with every chunk in order and ``[DONE]``, errors by kind, the gateway's RSS (before,
sampled peak, after) and CPU seconds of each process, the machine's load average, and the usage rows the
gateway stored. *added p99* = p99(gateway) - p99(direct) of the same round; the floor's added p99 and CPU
seconds are printed next to the gateway's as information (the target is the gateway's alone).

Soak (``--soak-seconds S --rate N``): N streams/s through the gateway and, interleaved, N/s direct (the
baseline under the same conditions) for S s; the gateway's RSS every ``--sample`` s, summarised as the mean
of the first and the last minute and the least-squares slope after the first minute (MB/min), with per-minute
latency figures. Nothing is asserted: PASS/FAIL is printed against the targets (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import re
import resource
import signal
import sys
import tempfile
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import procs as bg  # the process helpers: free_port, spawn, stop, cpu_s, rss_mb, ...
from load_report import relays, report, slope_mb_per_min, summarize, verdicts
from load_rig import Rig, cpu_used, loadavg

STAMP = re.compile(rb"tok(\d+)@(\d+)")
DONE = b"data: [DONE]"


class Tally:
    """What one group of streams saw: per-chunk latencies (us), completions, errors by kind, concurrency."""

    def __init__(self) -> None:
        self.lat_us = array("q")
        self.t0_ns = time.time_ns()
        self.by_second: dict[int, array[int]] = {}  # per second since t0_ns: where in a phase chunks were late
        self.started = self.completed = self.in_flight = self.peak = 0
        self.errors: Counter[str] = Counter()

    def summary(self) -> dict[str, Any]:
        """Counts, errors, peak concurrency and the chunk latency percentiles (ms), overall and per second."""
        lat = sorted(self.lat_us)
        ms = {f"p{q}_ms": lat[round(q / 100 * (len(lat) - 1))] / 1e3 if lat else None for q in (50, 99, 100)}
        ms["max_ms"] = ms.pop("p100_ms")
        out = {"streams": self.started, "completed": self.completed, "errors": dict(self.errors)}
        by_s = {s: sorted(v) for s, v in sorted(self.by_second.items())}
        out["p99_ms_by_second"] = {s: v[round(0.99 * (len(v) - 1))] / 1e3 for s, v in by_s.items()}
        return {**out, "peak_in_flight": self.peak, "chunks_timed": len(lat), **ms}


async def one_stream(session: Any, url: str, payload: bytes, chunks: int, tally: Tally, budget: float) -> None:
    """One streamed chat completion; every stamped chunk's latency goes into ``tally``."""
    import aiohttp

    tally.started += 1
    tally.in_flight += 1
    tally.peak = max(tally.peak, tally.in_flight)
    seen, done, kind, stage = 0, False, "", "@request"  # stage: did it fail before the answer began?
    try:
        async with asyncio.timeout(budget), session.post(url, data=payload) as resp:
            if resp.status != 200:
                kind = f"http_{resp.status}"
                await resp.read()
                return
            tail, stage = b"", "@stream"
            async for raw in resp.content.iter_any():
                now = time.time_ns()
                data = tail + raw
                end = data.rfind(b"\n") + 1  # only whole lines: a stamp may be split between two reads
                whole, tail = data[:end], data[end:]
                for m in STAMP.finditer(whole):
                    if int(m[1]) != seen:
                        kind = kind or "chunk_out_of_order"
                    seen += 1
                    tally.lat_us.append(lat := (now - int(m[2])) // 1000)
                    tally.by_second.setdefault((now - tally.t0_ns) // 1_000_000_000, array("q")).append(lat)
                if b'"error"' in whole:
                    kind = kind or "error_event"
                done = done or DONE in whole
        kind = kind or ("missing_chunks" if seen != chunks else "" if done else "no_done")
    except TimeoutError:
        kind = "timeout" + stage
    except asyncio.CancelledError:
        kind = "cut_by_time_limit"
        raise
    except (aiohttp.ClientError, OSError) as exc:
        kind = type(exc).__name__ + stage
    finally:
        tally.in_flight -= 1
        if kind:
            tally.errors[kind] += 1
        else:
            tally.completed += 1


Samples = list[tuple[float, float, int]]


async def sample_rss(rig: Rig, every: float, into: Samples, until: float, gauge: Any = lambda: 0) -> None:
    """Append (monotonic s, gateway RSS MB, ``gauge()``) every ``every`` s until cancelled or ``until``."""
    while time.monotonic() < until:
        into.append((time.monotonic(), rig.rss(), gauge()))
        await asyncio.sleep(every)


async def burst(rig: Rig, who: str, deadline: float) -> dict[str, Any]:
    """``--streams`` streams started over ``--ramp`` s to ``who``; waits for all of them (bounded by time)."""
    args, tally, rss = rig.args, Tally(), [(time.monotonic(), rig.rss(), 0)]
    n, rows0, load0, cpu0 = args.streams, rig.usage_rows(), loadavg(), rig.cpu()
    end = min(deadline, time.monotonic() + args.ramp + rig.stream_timeout + 5)
    sampler = asyncio.create_task(sample_rss(rig, 0.1, rss, end))
    t0, tally.t0_ns = time.monotonic(), time.time_ns()
    async with rig.session() as session:
        tasks = []
        for i in range(n):
            if (delay := t0 + i * args.ramp / n - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            if time.monotonic() > end:
                break
            job = one_stream(session, rig.url(who, i), rig.bodies[who], args.chunks, tally, rig.stream_timeout)
            tasks.append(asyncio.create_task(job))
        await asyncio.wait(tasks, timeout=max(0.1, end - time.monotonic()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    wall, cpu1 = time.monotonic() - t0, rig.cpu()
    sampler.cancel()
    await asyncio.sleep(args.settle)  # let the gateway finish closing connections before "after"
    rows1 = rig.usage_rows()
    out = {"who": who, **tally.summary(), "wall_s": round(wall, 2), "cpu_s": cpu_used(cpu0, cpu1)}
    peak = max(r for _, r, _ in rss)
    out["gateway_rss_mb"] = {"before": rss[0][1], "peak": peak, "after": rig.rss()}
    out["gateway_kb_per_stream"] = (peak - rss[0][1]) * 1024 / max(1, tally.peak)
    out["usage_rows"] = {"stored": rows1[0] - rows0[0], "ok": rows1[1] - rows0[1]}
    out["loadavg"] = {"before": load0, "after": loadavg()}
    print(f"  {who:7s} {json.dumps({k: out[k] for k in ('completed', 'errors', 'p99_ms')})}", file=sys.stderr)
    return out


async def soak(rig: Rig, deadline: float) -> dict[str, Any]:
    """``--rate`` streams/s through the gateway and as many direct, interleaved, for ``--soak-seconds``."""
    args, rss, live = rig.args, Samples(), Counter[str]()  # live: streams open now, to read RSS against
    minutes: dict[tuple[str, int], Tally] = {}
    totals = {"direct": Tally(), "gateway": Tally()}
    rows0, load0, cpu0, t0 = rig.usage_rows(), loadavg(), rig.cpu(), time.monotonic()
    end = min(deadline, t0 + args.soak_seconds)

    def gauge() -> int:
        return live["gateway"]

    sampler = asyncio.create_task(sample_rss(rig, args.sample, rss, end + rig.stream_timeout, gauge))
    loads = [(0.0, loadavg())]

    async def counted(who: str, k: int, minute: int, session: Any) -> None:
        tally = minutes.setdefault((who, minute), Tally())
        live[who] += 1
        try:
            await one_stream(session, rig.url(who, k // 2), rig.bodies[who], args.chunks, tally, rig.stream_timeout)
        finally:
            live[who] -= 1

    async with rig.session() as session:
        pending: set[asyncio.Task[None]] = set()
        for k in range(int(args.soak_seconds * args.rate) * 2):  # bounded in count, and in time below
            if (delay := t0 + k / (2 * args.rate) - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            if (now := time.monotonic()) > end:
                break
            minute = int((now - t0) // 60)
            if minute != int(loads[-1][0] // 60):
                loads.append((now - t0, loadavg()))
            task = asyncio.create_task(counted(("gateway", "direct")[k % 2], k, minute, session))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=max(0.1, deadline + rig.stream_timeout - time.monotonic()))
        for task in list(pending):
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    wall, cpu1 = time.monotonic() - t0, rig.cpu()
    sampler.cancel()
    for (who, _), tally in minutes.items():
        total = totals[who]
        total.lat_us.extend(tally.lat_us)
        total.started, total.completed = total.started + tally.started, total.completed + tally.completed
        total.errors.update(tally.errors)
    per_minute = []
    for m in range(int(wall // 60) + 1):
        row = {who: minutes[(who, m)].summary() for who in totals if (who, m) in minutes}
        if "gateway" in row and "direct" in row and row["gateway"]["p99_ms"] is not None:
            row["added_p99_ms"] = row["gateway"]["p99_ms"] - (row["direct"]["p99_ms"] or 0.0)
        per_minute.append(row)
    series = [(round(t - t0, 1), r, n) for t, r, n in rss]  # (s, RSS MB, gateway streams open)
    first = [r for t, r, _ in series if t < 60] or [float("nan")]
    last = [r for t, r, _ in series if t >= series[-1][0] - 60] or [float("nan")]
    half = series[-1][0] / 2
    out: dict[str, Any] = {who: t.summary() for who, t in totals.items()}
    g, d = out["gateway"], out["direct"]
    out["added_p99_ms"] = g["p99_ms"] - d["p99_ms"] if g["p99_ms"] is not None and d["p99_ms"] is not None else None
    out.update(seconds=round(wall, 1), rate=args.rate, cpu_s=cpu_used(cpu0, cpu1), per_minute=per_minute)
    out["gateway_rss_mb"] = {
        "first_minute_mean": sum(first) / len(first),
        "last_minute_mean": sum(last) / len(last),
        "max": max(r for _, r, _ in series),
        "slope_mb_per_min_after_1min": slope_mb_per_min([(t, r) for t, r, _ in series if t >= 60]),
        "slope_mb_per_min_second_half": slope_mb_per_min([(t, r) for t, r, _ in series if t >= half]),
        "max_open_gateway_streams": max(n for _, _, n in series),
        "series": series,
    }
    rows1 = rig.usage_rows()
    out["usage_rows"] = {"stored": rows1[0] - rows0[0], "ok": rows1[1] - rows0[1]}
    out["loadavg"] = {"before": load0, "per_minute": loads[1:], "after": loadavg()}
    return out


async def run(args: argparse.Namespace, rig: Rig) -> dict[str, Any]:
    """Warm both paths up, run the burst rounds and the soak; each phase is bounded by ``--time-limit``."""
    deadline = time.monotonic() + args.time_limit
    async with rig.session() as session:  # warm-up: imports, pools, the first usage rows
        warm = Tally()
        urls = [(who, rig.url(who, i)) for who in rig.urls for i in range(10)]
        jobs = (one_stream(session, url, rig.bodies[w], args.chunks, warm, rig.stream_timeout) for w, url in urls)
        await asyncio.wait_for(asyncio.gather(*jobs), timeout=rig.stream_timeout + 5)
    if warm.completed != len(urls):
        raise RuntimeError(f"warm-up streams failed: {dict(warm.errors)}; see {rig.tmp}/*.log")
    res: dict[str, Any] = {"phases": []}
    res["gateway_rss_idle_mb"] = rig.rss()
    whos = [who for who in ("direct", "floor", "asgi", "asgi_w", "gateway", "baseline") if who in rig.urls]
    if args.warm_burst and args.rounds:
        # The first full-size burst of a run is slow whichever path it takes (the client's and the upstream's
        # first thousand connections): one burst of each, not counted, so that round 0 compares like with like.
        print("  warm-up bursts (not counted)", file=sys.stderr)
        res["warm"] = [await burst(rig, who, deadline) for who in whos]  # kept: the memory verdict reads them
    for r in range(args.rounds):
        for who in whos[r % len(whos) :] + whos[: r % len(whos)]:  # rotated: each phase takes each place in turn
            if time.monotonic() > deadline:
                break
            res["phases"].append({"round": r, **await burst(rig, who, deadline)})
    if args.soak_seconds > 0 and time.monotonic() < deadline:
        print(f"  soak: {args.rate} streams/s each way for {args.soak_seconds} s", file=sys.stderr)
        res["soak"] = await soak(rig, deadline)
    res["gateway_rss_end_mb"], res["gateway_rss_hwm_mb"] = (
        rig.rss(),
        rig.rss("VmHWM"),
    )
    return res


def main() -> None:
    """Parse the options, start the processes, run the phases, print the table and save the JSON."""
    p = argparse.ArgumentParser(description="minigate load benchmark (see the module docstring)")
    p.add_argument("--streams", type=int, default=1000, help="streams per burst phase (1000)")
    p.add_argument("--chunks", type=int, default=64, help="content chunks per stream (64)")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between chunks (0.05)")
    p.add_argument("--ramp", type=float, default=1.0, help="seconds over which a burst's streams start (1.0)")
    p.add_argument("--rounds", type=int, default=2, help="burst rounds, each direct, floor, gateway (2; 0: soak only)")
    p.add_argument(
        "--floor", action=argparse.BooleanOptionalAction, default=True, help="a floor phase in each round (on)"
    )
    p.add_argument(
        "--asgi", action=argparse.BooleanOptionalAction, default=True, help="the ASGI floors' phases in each round (on)"
    )
    p.add_argument(
        "--warm-burst", action=argparse.BooleanOptionalAction, default=True, help="an uncounted burst of each (on)"
    )
    p.add_argument("--settle", type=float, default=2.0, help="seconds after a burst before RSS 'after' (2)")
    p.add_argument("--soak-seconds", type=float, default=0.0, help="soak duration (0: no soak)")
    p.add_argument("--rate", type=float, default=30.0, help="soak: streams/s through the gateway, and direct (30)")
    p.add_argument("--sample", type=float, default=5.0, help="soak: seconds between RSS samples (5)")
    p.add_argument("--time-limit", type=float, default=1800.0, help="stop every phase after this many s (1800)")
    p.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    p.add_argument("--gateway-root", metavar="DIR", help="run the gateway from the code in DIR")
    p.add_argument(
        "--baseline-root", metavar="DIR", help="a 'baseline' phase too: the gateway of the code in DIR (own data)"
    )
    p.add_argument(
        "--gateways", type=int, default=1, help="gateway processes sharing the data folder; streams alternate"
    )
    args = p.parse_args()
    if importlib.util.find_spec("uvloop"):
        importlib.import_module("uvloop").install()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * max(1000, args.streams) + 1000  # client + gateway (both sides) + upstream sockets; children inherit
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, hard)), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SystemExit runs the finally below
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)  # the client's own collector pauses would show up as chunk latency
    res: dict[str, Any] = {"args": vars(args), "cpus": os.cpu_count(), "loadavg_start": loadavg()}
    procs: list[bg.Proc] = []
    with tempfile.TemporaryDirectory(prefix="minigate-load-") as tmpname:
        try:
            rig = Rig(args, Path(tmpname), procs)
            pids = [g.pid for g in rig.gateways]
            floor = f", floor pid {rig.floor.pid}" if rig.floor else ""
            print(f"gateway pids {pids}, upstream pid {rig.upstream.pid}{floor}; measuring...", file=sys.stderr)
            res.update(asyncio.run(run(args, rig)))
        finally:
            for proc in reversed(procs):
                bg.stop(proc)
            logs = sorted(Path(tmpname).glob("gateway-*.log"))
            log = [line for f in logs for line in f.read_text(errors="replace").splitlines()]
            bad = [line for line in log if '"level": "INFO"' not in line and '"level":"INFO"' not in line]
            res["gateway_log"] = {"lines": len(log), "not_info": len(bad), "last_not_info": bad[-5:]}
    res["loadavg_end"] = loadavg()
    summarize(res)
    relays(res)
    res["verdicts"] = verdicts(res, args)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

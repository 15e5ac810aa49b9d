#!/usr/bin/env python
"""``minigate serve --workers 2`` against ``--workers 1``, side by side in one run, over one fake upstream.

Run from the repository root with the project's venv active (about 70 s; --quick about 30 s)::

    python bench/bench_workers.py [--quick] [--json results.json]

Both gateways run at once (their own data folders, default agent -> the "fast" upstream of bench_gateway.py):

* added latency at concurrency 1, p50/p99 over the upstream straight (sequential keep-alive requests, the three
  targets interleaved in alternating order so noise hits all of them);
* requests/s at concurrency 50 (bench_gateway.py's load generator in its own process; rounds alternate between
  the two gateways) with the CPU each part used: every gateway process, the supervisor, the upstream, the load
  generator and everything else on the machine. The bar: workers 2 at least 1.6x the requests/s of workers 1.

The load average (/proc/loadavg) is printed before and after: on a machine with few cores the load generator and
the upstream compete with the gateway processes for the same cores, which caps what a second worker can add.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_gateway import body, compare, interleaved, load_round, start_upstream
from procs import HOST, KEY, ROOT, Proc, answers, free_port, rss_mb, spawn, stop, wait_until

RATIO_TARGET, ADDED_P50_TARGET_MS = 1.6, 1.0


def children(parent: int, marker: bytes) -> list[int]:
    """Processes whose parent is ``parent`` and whose command line holds ``marker``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and marker in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(found)


def start_gateway(tmp: Path, upstream: int, workers: int, procs: list[Proc]) -> tuple[int, dict[str, int]]:
    """``minigate serve --workers N``: its port and the pids whose CPU counts as the gateway's."""
    folder = tmp / f"workers{workers}"
    folder.mkdir()
    port = free_port()
    provider = {"type": "openai", "endpoint": f"http://{HOST}:{upstream}/v1", "models": ["m"]}
    config = {
        "agents": {"defaults": {"model": {"primary": "fast/m"}}},
        "models": {"providers": {"fast": provider}},
        "server": {"host": HOST, "port": port, "data_dir": str(folder / "data")},
    }
    (folder / "config.json").write_text(json.dumps(config))
    args = [sys.executable, "-m", "minigate.gateway.cli", "serve", "--config", str(folder / "config.json")]
    args += ["--workers", str(workers), "--no-pull"]
    procs.append(proc := spawn(args, folder / "gateway.log", {"MINIGATE_ADMIN_KEY": KEY, "PYTHONPATH": str(ROOT)}))
    wait_until(lambda: answers(port, "POST", "/v1/chat/completions", body("default")), 40, 0.1)
    if workers == 1:
        return port, {"gateway": proc.pid}
    deadline = time.monotonic() + 30
    while len(pids := children(proc.pid, b"minigate.gateway.cli")) < workers:
        if time.monotonic() > deadline:
            sys.exit(f"only {len(pids)} of {workers} workers started")
        time.sleep(0.1)
    return port, {"supervisor": proc.pid, **{f"gateway{i}": pid for i, pid in enumerate(pids)}}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(quick: bool) -> dict[str, Any]:
    n_lat, rounds, n_load, secs = (200, 2, 6000, 4.0) if quick else (500, 3, 12000, 6.0)
    res: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_before": loadavg()}
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="minigate-bench-workers-") as name:
        tmp = Path(name)
        try:
            fast = start_upstream(tmp, "fast", 8, 0.0, procs)
            up_pid = procs[-1].pid
            gateways = {n: start_gateway(tmp, fast, n, procs) for n in (1, 2)}
            print(f"gateways ready { ({n: g[1] for n, g in gateways.items()}) }; measuring...", file=sys.stderr)
            url = {n: f"http://{HOST}:{p}/v1/chat/completions" for n, (p, _) in gateways.items()}
            cases = {"direct": (f"http://{HOST}:{fast}/v1/chat/completions", body("m"))}
            cases.update({f"workers{n}": (url[n], body("default")) for n in gateways})
            got = asyncio.run(interleaved(cases, n_lat, 50, False, 150))
            samples = {k: [first for first, _ in v] for k, v in got.items()}
            for n in gateways:
                res[f"latency_workers{n}"] = compare({"direct": samples["direct"], "gateway": samples[f"workers{n}"]})
            res["rss_mb"] = {n: {part: rss_mb(pid) for part, pid in g[1].items()} for n, g in gateways.items()}
            runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
            for i in range(rounds):
                for n in (1, 2) if i % 2 == 0 else (2, 1):
                    pids = {**gateways[n][1], "upstream": up_pid}
                    runs[n].append(load_round(url[n], body("default"), pids, n_load, secs))
            for n, done in runs.items():
                wall = sum(r["wall_s"] for r in done)
                cpu: dict[str, float] = {}
                for r in done:
                    for part, used in r["cpu"].items():
                        key = "gateway" if part.startswith("gateway") else part
                        cpu[key] = cpu.get(key, 0.0) + used
                    cpu["loadgen"] = cpu.get("loadgen", 0.0) + r["cpu_s"]
                    cpu["other"] = cpu.get("other", 0.0) + r["other_cpu_s"]
                res[f"load_workers{n}"] = {
                    "rps": sum(r["requests"] for r in done) / wall,
                    "errors": sum(r["errors"] for r in done),
                    "p50_ms": max(r["p50_ms"] for r in done),
                    "cpu_pct": {part: used / wall * 100 for part, used in cpu.items()},
                }
        finally:
            for proc in reversed(procs):
                stop(proc)
    res["loadavg_after"] = loadavg()
    return res


def report(res: dict[str, Any]) -> None:
    print(f"cores: {res['cpus']}; load average before: {res['loadavg_before']}, after: {res['loadavg_after']}")
    for n in (1, 2):
        lat = res[f"latency_workers{n}"]
        print(
            f"workers {n}: added latency c=1 p50 {lat['added_p50']:+.3f} ms, p99 {lat['added_p99']:+.3f} ms"
            f" (direct p50 {lat['direct_p50']:.3f} ms, n={lat['n']})"
        )
    for n in (1, 2):
        load = res[f"load_workers{n}"]
        parts = ", ".join(f"{part} {pct:.0f}%" for part, pct in sorted(load["cpu_pct"].items()))
        print(f"workers {n}: {load['rps']:.0f} req/s c=50 (errors {load['errors']}, p50 {load['p50_ms']:.1f} ms)")
        print(f"  CPU (% of one core): {parts}")
    between = res["latency_workers2"]["gateway_p50"] - res["latency_workers1"]["gateway_p50"]
    print(f"workers 2 against workers 1 at c=1: p50 {between:+.3f} ms")
    for n in (1, 2):
        print(f"workers {n}: RSS (MB) " + ", ".join(f"{k} {v:.0f}" for k, v in res["rss_mb"][n].items()))
    ratio = res["load_workers2"]["rps"] / res["load_workers1"]["rps"]
    added = res["latency_workers2"]["added_p50"]
    verdict = "PASS" if ratio >= RATIO_TARGET else "FAIL"
    print(f"req/s workers 2 / workers 1: x{ratio:.2f} (target >= x{RATIO_TARGET}: {verdict})")
    verdict = "PASS" if added <= ADDED_P50_TARGET_MS else "FAIL"
    print(f"added p50 c=1 with workers 2: {added:+.3f} ms (target <= {ADDED_P50_TARGET_MS} ms: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description="serve --workers 2 against --workers 1 (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help="fewer requests (about 30 s)")
    parser.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    args = parser.parse_args()
    res = run(args.quick)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Gateway overhead benchmark: the same requests sent straight to a fake upstream and through minigate.

Run from the repository root with the project's venv active (about 80 s; --quick about 30 s)::

    python bench/bench_gateway.py [--quick] [--json results.json] [--no-wrk] [--gateway-root DIR]

All on 127.0.0.1, as subprocesses: two fake upstreams (``python -m tests.fakes.upstream``; "fast" answers at
once, "paced" streams 20 chunks 20 ms apart), the gateway (``minigate serve``, temporary config and data
folder, default agent -> "fast"), and for throughput a load generator (this file with ``--loadgen``: aiohttp
on uvloop, its own process). Each figure is taken direct and through the gateway in the same run:

* added latency at concurrency 1, p50/p99 = percentile(gateway) - percentile(direct), for JSON chat
  completions and for a stream's first chunk (time to the first body bytes); sequential keep-alive
  requests after a warm-up, direct and gateway interleaved in alternating order so noise hits both;
* requests/s at concurrency 50 (non-streaming chat completions, bounded count and time, alternating
  rounds) with each process's CPU use (gateway CPU us/request = its cost on a dedicated core) and the CPU
  that other processes on the machine took meanwhile; also with ``wrk`` if installed;
* gateway VmRSS when idle after the warm-up and after the load;
* readiness: from spawning ``minigate serve`` until GET /health is 200 and a first chat completion
  succeeds (fresh data folder, so database migrations are included);
* info: arrival of the paced stream's chunks relative to their schedule, p50/p99, and the gateway's addition.

``--gateway-root DIR`` runs the gateway from another copy of the code (to measure a change). PASS/FAIL is
printed against the targets; nothing is asserted (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import HEADERS, HOST, KEY, ROOT, Proc, answers, cpu_s, free_port, rss_mb, spawn, stop, wait_until

PACED_CHUNKS, PACED_INTERVAL = 20, 0.02
TARGETS = {"added_p50_ms": 1.0, "added_p99_ms": 3.0, "rps": 1500.0, "rss_mb": 150.0, "ready_s": 2.0}


def body(model: str, stream: bool = False) -> bytes:
    messages = [{"role": "user", "content": "Say hello"}]
    return json.dumps({"model": model, "messages": messages, "stream": stream}).encode()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))] if s else float("nan")


async def _one(session: Any, url: str, payload: bytes, stream: bool) -> tuple[float, list[float]]:
    """(ms to the whole JSON answer or to a stream's first body bytes, ms at which each content chunk came)."""
    t0 = time.perf_counter()
    async with session.post(url, data=payload, headers=HEADERS) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}: {(await resp.read())[:200]!r}")
        if not stream:
            await resp.read()
            return (time.perf_counter() - t0) * 1e3, []
        first, marks = 0.0, []
        async for line in resp.content:
            now = (time.perf_counter() - t0) * 1e3
            first = first or now
            if b"tok" in line:
                marks.append(now)
        return first, marks


Samples = dict[str, list[tuple[float, list[float]]]]


async def interleaved(
    cases: dict[str, tuple[str, bytes]], n: int, warm: int, stream: bool, budget: float, one: Any = None
) -> Samples:
    """Sequential requests, one keep-alive connection per case, cases alternating in order; ``one(session, url,
    payload, stream)`` sends one and returns what is kept (default: :func:`_one`)."""
    one = one or _one
    import aiohttp

    out: Samples = {name: [] for name in cases}
    sessions = {name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for name in cases}
    end = time.monotonic() + budget
    try:
        for i in range(warm + n):
            if time.monotonic() > end:
                print(f"  (time budget reached after {i - warm} requests per case)", file=sys.stderr)
                break
            for name in list(cases) if i % 2 == 0 else list(reversed(cases)):
                result = await one(sessions[name], *cases[name], stream)
                if i >= warm:
                    out[name].append(result)
    finally:
        for s in sessions.values():
            await s.close()
    return out


async def _loadgen(spec: dict[str, Any]) -> None:
    """The load generator process: warm up, print GO, run the bounded load, print the results as JSON."""
    import aiohttp

    lat: list[float] = []
    errors = 0
    url, payload, conc = spec["url"], spec["body"].encode(), spec["conc"]
    connector = aiohttp.TCPConnector(limit=conc)
    skip = ("User-Agent", "Accept-Encoding")
    headers = {**HEADERS, **spec.get("headers", {})}
    async with aiohttp.ClientSession(connector=connector, headers=headers, skip_auto_headers=skip) as session:

        async def run(total: int, until: float, record: bool) -> int:
            issued = 0

            async def worker() -> None:
                nonlocal issued, errors
                while issued < total and time.perf_counter() < until:
                    issued += 1
                    t = time.perf_counter()
                    try:
                        async with session.post(url, data=payload) as resp:
                            await resp.read()
                        ok = resp.status == 200
                    except (aiohttp.ClientError, OSError):
                        ok = False
                    if record:
                        errors += not ok
                        lat.append(time.perf_counter() - t)

            await asyncio.gather(*(worker() for _ in range(conc)))
            return issued

        await run(spec["warm"], time.perf_counter() + 10, False)
        print("GO", flush=True)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        done = await run(spec["n"], t0 + spec["secs"], True)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    result = {"requests": done, "errors": errors, "wall_s": wall, "cpu_s": cpu}
    print(json.dumps({**result, "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3}), flush=True)


def load_round(
    url: str, payload: bytes, pids: dict[str, int], n: int, secs: float, key: str | None = None
) -> dict[str, Any]:
    """One bounded load run at concurrency 50 in its own process, with the CPU seconds ``pids`` used meanwhile
    (``key``: the API key to send instead of the admin key)."""
    spec: dict[str, Any] = {"url": url, "body": payload.decode(), "conc": 50, "n": n, "secs": secs, "warm": 500}
    if key is not None:
        spec["headers"] = {"authorization": f"Bearer {key}"}
    args = [sys.executable, str(Path(__file__).resolve()), "--loadgen", json.dumps(spec)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "GO":
            raise RuntimeError("the load generator failed during its warm-up")
        before, busy = {name: cpu_s(pid) for name, pid in pids.items()}, cpu_s(None)
        result: dict[str, Any] = json.loads(proc.stdout.readline())
        used = {name: cpu_s(pid) - before[name] for name, pid in pids.items()}
        result.update(cpu=used, other_cpu_s=cpu_s(None) - busy - sum(used.values()) - result["cpu_s"])
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return result


def summarize_load(runs: list[dict[str, Any]]) -> dict[str, Any]:
    wall, total = sum(r["wall_s"] for r in runs), sum(r["requests"] for r in runs)
    cpu = {p: sum(r["cpu"][p] for r in runs) for p in runs[0]["cpu"]}
    cpu.update(loadgen=sum(r["cpu_s"] for r in runs), other=sum(r["other_cpu_s"] for r in runs))
    out = {"requests": total, "errors": sum(r["errors"] for r in runs), "wall_s": wall, "rps": total / wall}
    out.update(p50_ms=max(r["p50_ms"] for r in runs), p99_ms=max(r["p99_ms"] for r in runs))
    out.update(cpu_pct={p: c / wall * 100 for p, c in cpu.items()}, gateway_cpu_us_per_req=cpu["gateway"] / total * 1e6)
    return out


def wrk_rps(url: str, payload: bytes, secs: int, tmp: Path) -> float | None:
    """Requests/s from ``wrk -t1 -c50`` with a Lua script for the POST body (None without wrk)."""
    exe = shutil.which("wrk")
    if exe is None:
        return None
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(payload.decode())}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in HEADERS.items()]
    (tmp / "post.lua").write_text("\n".join(lines) + "\n")
    cmd = [exe, "-t1", "-c50", f"-d{secs}s", "-s", str(tmp / "post.lua"), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  wrk reported errors:\n{out}", file=sys.stderr)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else None


def start_upstream(tmp: Path, name: str, chunks: int, interval: float, procs: list[Proc]) -> int:
    port = free_port()
    args = f"-m tests.fakes.upstream --port {port} --chunks {chunks} --interval {interval}".split()
    procs.append(spawn([sys.executable, *args], tmp / f"upstream-{name}.log"))
    wait_until(lambda: answers(port, "GET", "/v1/models"), 20, 0.05)
    return port


def start_gateway(
    tmp: Path, ports: dict[str, int], procs: list[Proc], root: str | None, group: str | None = None
) -> tuple[Proc, int, Any]:
    """Spawn ``minigate serve``; returns it, its port, and the seconds until /health and a completion answer.

    ``group``: the default agent is a group of two members (``fast/m``, ``fast2/m``, one upstream) with this
    strategy, to compare against the plain chain."""
    port = free_port()
    providers = {n: {"type": "openai", "endpoint": f"http://{HOST}:{p}/v1", "models": ["m"]} for n, p in ports.items()}
    primary: Any = "fast/m"
    if group is not None:
        providers["fast2"] = providers["fast"]
        primary = {"group": ["fast/m", "fast2/m"], "strategy": group}
    agents = {"defaults": {"model": {"primary": primary}}, "paced": {"model": {"primary": "paced/m"}}}
    server = {"host": HOST, "port": port, "data_dir": str(tmp / "data")}
    config = {"agents": agents, "models": {"providers": providers}, "server": server}
    (tmp / "config.json").write_text(json.dumps(config))
    exe = shutil.which("minigate") or str(Path(sys.executable).with_name("minigate"))
    # root: another copy's code, from before the minigate namespace (bare ``gateway``) or after it
    cli = "minigate.gateway.cli"
    if root is not None and not (Path(root) / "minigate").is_dir():
        cli = cli.removeprefix("minigate.")
    cmd = [exe] if root is None else [sys.executable, "-m", cli]
    env = {"MINIGATE_ADMIN_KEY": KEY, **({"PYTHONPATH": root} if root else {})}
    args = [*cmd, "serve", "--config", str(tmp / "config.json"), "--port", str(port)]
    if root is None:  # one process (older copies know no --workers and run one); bench_workers.py compares N
        args += ["--workers", "1"]
    t0 = time.monotonic()
    procs.append(proc := spawn(args, tmp / "gateway.log", env, root or ROOT))
    try:
        health = wait_until(lambda: proc.poll() is None and answers(port, "GET", "/health"), 30) - t0
        chat = wait_until(lambda: answers(port, "POST", "/v1/chat/completions", body("default")), 10) - t0
    except RuntimeError:
        sys.exit("gateway did not start:\n" + (tmp / "gateway.log").read_text()[-3000:])
    return proc, port, {"health_s": health, "first_completion_s": chat}


def compare(samples: dict[str, list[float]]) -> dict[str, float]:
    out = {f"{who}_p{q}": pct(samples[who], q) for who in ("direct", "gateway") for q in (50, 99)}
    for q in (50, 99):
        out[f"added_p{q}"] = out[f"gateway_p{q}"] - out[f"direct_p{q}"]
    return {**out, "n": min(len(v) for v in samples.values())}


def run(quick: bool, use_wrk: bool, root: str | None = None, group: str | None = None) -> dict[str, Any]:
    n_lat, n_paced, rounds, n_load, secs = (150, 8, 1, 4000, 4.0) if quick else (500, 30, 2, 10000, 8.0)
    res: dict[str, Any] = {"quick": quick, "cpus": os.cpu_count(), "group": group}
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="minigate-bench-") as tmpname:
        tmp = Path(tmpname)
        try:
            fast = start_upstream(tmp, "fast", 8, 0.0, procs)
            ports = {"fast": fast, "paced": start_upstream(tmp, "paced", PACED_CHUNKS, PACED_INTERVAL, procs)}
            gw, gport, res["ready"] = start_gateway(tmp, ports, procs, root, group)
            print(f"gateway pid {gw.pid} ready; measuring...", file=sys.stderr)
            url = {name: f"http://{HOST}:{p}/v1/chat/completions" for name, p in {**ports, "gateway": gport}.items()}
            for kind, stream in (("json", False), ("ttfc", True)):
                cases = {
                    "direct": (url["fast"], body("m", stream)),
                    "gateway": (url["gateway"], body("default", stream)),
                }
                got = asyncio.run(interleaved(cases, n_lat, 50, stream, 120))
                res[kind] = compare({k: [first for first, _ in v] for k, v in got.items()})
            res["rss_idle_mb"] = rss_mb(gw.pid)
            cases = {"direct": (url["paced"], body("m", True)), "gateway": (url["gateway"], body("paced", True))}
            got = asyncio.run(interleaved(cases, n_paced, 2, True, 90))
            res["paced_first_chunk"] = compare({k: [first for first, _ in v] for k, v in got.items()})
            step = PACED_INTERVAL * 1e3
            late = {k: [m - i * step for _, marks in v for i, m in enumerate(marks) if i] for k, v in got.items()}
            res["paced_chunk_lateness"] = compare(late)
            pids = {"gateway": gw.pid, "upstream": procs[0].pid}
            load: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
            for _ in range(rounds):
                for who, target, model in (("direct", "fast", "m"), ("gateway", "gateway", "default")):
                    load[who].append(load_round(url[target], body(model), pids, n_load, secs))
            res["load_direct"], res["load_gateway"] = summarize_load(load["direct"]), summarize_load(load["gateway"])
            time.sleep(1.0)
            res["rss_idle_after_load_mb"], res["rss_peak_mb"] = rss_mb(gw.pid), rss_mb(gw.pid, "VmHWM")
            if use_wrk and shutil.which("wrk"):
                res["wrk_direct_rps"] = wrk_rps(url["fast"], body("m"), 4 if quick else 8, tmp)
                res["wrk_gateway_rps"] = wrk_rps(url["gateway"], body("default"), 4 if quick else 8, tmp)
        finally:
            for proc in reversed(procs):
                stop(proc)
    return res


def report(res: dict[str, Any]) -> dict[str, bool]:
    """Print the results table; returns {target row: met}."""
    verdicts: dict[str, bool] = {}
    rows: list[tuple[str, ...]] = [("metric", "direct", "gateway", "added/ratio", "target", "result")]

    def row(name: str, direct: str = "", gateway: str = "", delta: str = "", target: str = "", ok: Any = None) -> None:
        if ok is not None:
            verdicts[name] = ok
        rows.append((name, direct, gateway, delta, target, "" if ok is None else ("PASS" if ok else "FAIL")))

    latency = (("json", "JSON latency c=1"), ("ttfc", "stream first chunk c=1"))
    info = (("paced_first_chunk", "paced stream first chunk"), ("paced_chunk_lateness", "paced chunks behind schedule"))
    for kind, label in latency + info:
        r = res[kind]
        for q in (50, 99):
            limit, added, target = TARGETS[f"added_p{q}_ms"], r[f"added_p{q}"], (kind, label) in latency
            ok = added <= limit if target else None
            cells = (f"{r[f'direct_p{q}']:.3f}", f"{r[f'gateway_p{q}']:.3f}", f"{added:+.3f}")
            row(f"{label} p{q} (ms, n={r['n']})", *cells, f"added <= {limit:g}" if target else "info", ok)
    d, g = res["load_direct"], res["load_gateway"]
    ratio, need = f"x{g['rps'] / d['rps']:.3f}", TARGETS["rps"]
    rps = (f"{d['rps']:.0f}", f"{g['rps']:.0f}", ratio, f"gateway >= {need:g}")
    row("req/s c=50 JSON (aiohttp loadgen)", *rps, g["rps"] >= need)
    row("  requests / errors", f"{d['requests']}/{d['errors']}", f"{g['requests']}/{g['errors']}")
    row("  latency under load p50/p99 (ms)", *(f"{x['p50_ms']:.1f}/{x['p99_ms']:.1f}" for x in (d, g)))
    for p in ("gateway", "upstream", "loadgen", "other"):
        name = f"  CPU % of one core: {p}" + (" processes" if p == "other" else "")
        row(name, *(f"{x['cpu_pct'][p]:.0f}" for x in (d, g)))
    us = g["gateway_cpu_us_per_req"]
    row("  gateway CPU us/request (-> req/s per core)", "", f"{us:.0f}", f"({1e6 / max(us, 1):.0f})")
    if res.get("wrk_direct_rps") and res.get("wrk_gateway_rps"):
        wd, wg = res["wrk_direct_rps"], res["wrk_gateway_rps"]
        row("req/s c=50 JSON (wrk -t1, info)", f"{wd:.0f}", f"{wg:.0f}", f"x{wg / wd:.3f}")
    rss, limit = max(res["rss_idle_mb"], res["rss_idle_after_load_mb"]), TARGETS["rss_mb"]
    row("gateway RSS idle after warm-up (MB)", "", f"{res['rss_idle_mb']:.1f}", "", f"<= {limit:g}", rss <= limit)
    row("  RSS idle after load / peak (MB)", "", f"{res['rss_idle_after_load_mb']:.1f}/{res['rss_peak_mb']:.1f}")
    ready, limit = res["ready"], TARGETS["ready_s"]
    row("ready: /health answers 200 (s)", "", f"{ready['health_s']:.2f}")
    first = ready["first_completion_s"]
    row("ready: first completion (s)", "", f"{first:.2f}", "", f"<= {limit:g}", first <= limit)
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    rows.insert(1, tuple("-" * w for w in widths))
    for r in rows:
        line = [c.rjust(w) for c, w in zip(r, widths, strict=True)]
        print("  ".join([r[0].ljust(widths[0]), *line[1:]]).rstrip())
    print(f"\n{sum(verdicts.values())}/{len(verdicts)} targets met")
    if g["cpu_pct"]["other"] > 20:
        print("note: other processes took CPU during the load test, so req/s and latencies are pessimistic")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description="minigate gateway overhead benchmark (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help="fewer requests (about 30 s)")
    parser.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk measurement even if wrk is installed")
    parser.add_argument("--gateway-root", metavar="DIR", help="run the gateway from the code in DIR")
    parser.add_argument("--group", metavar="STRATEGY", help="the default agent as a group of two (least_busy, ...)")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if importlib.util.find_spec("uvloop"):
        importlib.import_module("uvloop").install()
    if args.loadgen:
        asyncio.run(_loadgen(json.loads(args.loadgen)))
        return
    res = run(args.quick, not args.no_wrk, args.gateway_root, args.group)
    res["verdicts"] = report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

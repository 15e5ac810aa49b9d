#!/usr/bin/env python
"""What a key's policy costs: gateway CPU per request at concurrency 50, a key with no policy beside one with every
limit and budget set (never reached) and one whose person has such a policy too, in alternating rounds of one run.

Run from the repository root with the project's venv active (about 70 s; --quick about 30 s)::

    python bench/bench_limits.py [--quick] [--json results.json]

One fake upstream ("fast"), ``minigate serve`` (the fast model priced, so each answer's cost is computed and
counted), and a load generator process per round (aiohttp, 50 connections, JSON chat completions). Reported per
key: requests/s, p50/p99 and the gateway's CPU microseconds per request; the difference is what the policy's
checks and counting add. /proc/loadavg is printed before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench_gateway import body, load_round, start_upstream, summarize_load
from procs import HOST, KEY, Proc, answers, free_port, spawn, stop, wait_until

LIMITED = {
    "models": ["default", "fast/*"],
    "rpm": 10**9,
    "tpm": 10**12,
    "concurrency": 10_000,
    "daily_tokens": 10**12,
    "monthly_tokens": 10**12,
    "daily_usd": 1e9,
    "monthly_usd": 1e9,
}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def start(tmp: Path, upstream: int, procs: list[Proc]) -> int:
    port = free_port()
    config = {
        "agents": {"defaults": {"model": {"primary": "fast/m"}}},
        "models": {
            "providers": {"fast": {"type": "openai", "endpoint": f"http://{HOST}:{upstream}/v1", "models": ["m"]}},
            "prices": {"fast/m": {"input": 2.5, "output": 10.0}},
        },
        "server": {"host": HOST, "port": port, "data_dir": str(tmp / "data")},
    }
    (tmp / "config.json").write_text(json.dumps(config))
    exe = shutil.which("minigate") or str(Path(sys.executable).with_name("minigate"))
    procs.append(
        proc := spawn(
            [exe, "serve", "--workers", "1", "--config", str(tmp / "config.json")],  # one process, its CPU measured
            tmp / "gw.log",
            {"MINIGATE_ADMIN_KEY": KEY},
        )
    )
    wait_until(lambda: proc.poll() is None and answers(port, "GET", "/health"), 30)
    return port


def _admin(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{HOST}:{port}/admin/api/{path}",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        made: dict[str, Any] = json.loads(answer.read())
        return made


def new_key(port: int, policy: dict[str, Any] | None, person_policy: dict[str, Any] | None = None) -> str:
    """A key with ``policy``; with ``person_policy``, the key of a new person who has that policy of their own."""
    user_id = None
    if person_policy is not None:
        person = {"name": "bench-person", "password": "bench-password", "policy": person_policy}
        user_id = _admin(port, "users", person)["id"]
    return str(_admin(port, "keys", {"name": "bench", "policy": policy, "user_id": user_id})["key"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    rounds, n, secs = (2, 4000, 4.0) if args.quick else (4, 10000, 6.0)
    procs: list[Proc] = []
    res: dict[str, Any] = {"loadavg_before": loadavg()}
    with tempfile.TemporaryDirectory(prefix="minigate-bench-limits-") as tmpname:
        try:
            upstream = start_upstream(Path(tmpname), "fast", 8, 0.0, procs)
            port = start(Path(tmpname), upstream, procs)
            keys = {
                "no policy": new_key(port, None),
                "policy": new_key(port, LIMITED),
                "+ person": new_key(port, LIMITED, LIMITED),  # the key's and its person's policies, both checked
            }
            url, pids = f"http://{HOST}:{port}/v1/chat/completions", {"gateway": procs[-1].pid}
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in keys}
            for i in range(rounds):
                order = list(keys) if i % 2 == 0 else list(reversed(keys))
                for name in order:
                    runs[name].append(load_round(url, body("default"), pids, n, secs, key=keys[name]))
        finally:
            for proc in reversed(procs):
                stop(proc)
    res["loadavg_after"] = loadavg()
    for name, got in runs.items():
        res[name] = summarize_load(got)
    print(f"/proc/loadavg before: {res['loadavg_before']}   after: {res['loadavg_after']}")
    print(
        f"{'key':<10} {'requests':>9} {'errors':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'gateway CPU us/req':>19}"
    )
    for name in keys:
        r = res[name]
        print(
            f"{name:<10} {r['requests']:>9} {r['errors']:>6} {r['rps']:>7.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}"
            f" {r['gateway_cpu_us_per_req']:>19.1f}"
        )
    added = res["policy"]["gateway_cpu_us_per_req"] - res["no policy"]["gateway_cpu_us_per_req"]
    res["added_us_per_req"] = added
    print(f"the policy adds {added:.1f} us of gateway CPU per request (target: at most 50)")
    both = res["+ person"]["gateway_cpu_us_per_req"] - res["no policy"]["gateway_cpu_us_per_req"]
    res["added_with_person_us_per_req"] = both
    print(f"a key's and its person's policies add {both:.1f} us of gateway CPU per request")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

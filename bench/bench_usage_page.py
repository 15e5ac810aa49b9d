#!/usr/bin/env python
"""Usage page benchmark: how long ``GET /usage`` takes over 100,000 stored requests (target: <= 300 ms).

Run from the repository root with the project's venv active (about 30 s)::

    python bench/bench_usage_page.py [--rows 100000] [--requests 30] [--json results.json]

``minigate serve`` runs as a subprocess on 127.0.0.1 with a temporary config and data folder; the rows are
written straight into its SQLite database (spread over the last 24 hours, like a busy day), then a logged-in
client times each page, sequentially after a warm-up, interleaved with a baseline page that reads almost
nothing (``/keys``) so a busy machine shows in both. Reported: p50/p95 of the server's full answer time for the
usage page per time range and grouping, the CSV export of the day, and the baseline. PASS/FAIL is printed
against the target; nothing is asserted (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.web.usage_rows import fill_usage  # noqa: E402

PASSWORD = "bench-password"
TARGET_MS = 300.0
CONFIG = {
    "agents": {
        "defaults": {"model": {"primary": "echo/echo"}},
        "slow": {"model": {"primary": "slow/echo"}},
        "remote": {"model": {"primary": "echo/echo"}},
    },
    "models": {"providers": {"echo": {"type": "fake", "models": ["echo"]}, "slow": {"type": "fake"}}},
}
PAGES = [
    ("usage 24h by agent", "/usage?range=24h&by=agent"),
    ("usage 24h by model", "/usage?range=24h&by=model"),
    ("usage 7d by key", "/usage?range=7d&by=key"),
    ("usage 24h errors only", "/usage?range=24h&status=error"),
    ("usage 1h by provider", "/usage?range=1h&by=provider"),
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = folder / "minigate.json"
    config.write_text(json.dumps({**CONFIG, "server": {"data_dir": str(folder / "data")}}))
    port = _port()
    env = {**os.environ, "MINIGATE_ADMIN_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the gateway did not start")


def _login(client: httpx.Client) -> None:
    form = client.get("/login").text
    token = re.search(r'name="_login" value="([^"]+)"', form)
    assert token is not None
    response = client.post("/login", data={"_login": token.group(1), "secret": PASSWORD})
    assert response.status_code == 303, response.text


def _time(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (path, response.status_code)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, base = _start(folder)
        try:
            started = time.perf_counter()
            fill_usage(folder / "data" / "minigate.db", args.rows)
            print(f"stored {args.rows:,} usage rows in {time.perf_counter() - started:.1f} s")
            with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as client:
                _login(client)
                pages = [*PAGES, ("csv export 24h", "/usage.csv?range=24h"), ("baseline /keys", "/keys")]
                for _, path in pages:
                    for _ in range(3):
                        _time(client, path)  # warm-up: caches, first-query planning
                timings: dict[str, list[float]] = {name: [] for name, _ in pages}
                for _ in range(args.requests):
                    for name, path in pages:
                        timings[name].append(_time(client, path))
        finally:
            proc.terminate()
            proc.wait(10)
    figures = {}
    print(f"\n{'page':<26} {'p50 ms':>8} {'p95 ms':>8}  target")
    for name, values in timings.items():
        values.sort()
        p50 = statistics.median(values)
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        figures[name] = {"p50_ms": round(p50, 1), "p95_ms": round(p95, 1)}
        verdict = ""
        if name.startswith("usage"):
            verdict = f"<= {TARGET_MS:.0f} ms  {'PASS' if p50 <= TARGET_MS else 'FAIL'}"
        print(f"{name:<26} {p50:8.1f} {p95:8.1f}  {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "pages": figures}, indent=2))


if __name__ == "__main__":
    main()

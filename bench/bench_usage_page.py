#!/usr/bin/env python
"""Usage page benchmark: how long ``GET /usage`` takes over 100,000 stored requests (target: <= 300 ms).

Run from the repository root with the project's venv active (about 30 s)::

    python bench/bench_usage_page.py [--rows 100000] [--requests 30] [--json results.json]
    python bench/bench_usage_page.py --postgres postgresql://postgres@127.0.0.1:55432/postgres  # on PostgreSQL

With ``--postgres`` (a URL whose user may create databases) the gateway uses a new database made for the run
(dropped at the end) and the same rows are copied into it.

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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procs import Proc, serve_config  # noqa: E402  (bench/ is this script's own folder)

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


def _start(folder: Path, database_url: str | None = None) -> tuple[Proc, str]:
    server: dict[str, str] = {"data_dir": str(folder / "data")}
    if database_url:
        server["database_url"] = database_url
    return serve_config({**CONFIG, "server": server}, folder, {"MINIGATE_ADMIN_PASSWORD": PASSWORD})


def _copy_to_postgres(sqlite_path: Path, url: str) -> None:
    """Copy the usage rows of a SQLite file into the PostgreSQL database at ``url`` (already migrated)."""
    import sqlite3

    import psycopg

    columns = (
        "request_id, created_at, key_id, endpoint, requested_model, agent, provider, model, fallbacks, hops,"
        " status, error, prompt_tokens, completion_tokens, total_tokens, latency_ms, ttft_ms, streamed"
    )
    with sqlite3.connect(sqlite_path) as lite:
        rows = lite.execute(f"SELECT {columns} FROM usage ORDER BY id").fetchall()
    with psycopg.connect(url) as pg, pg.cursor() as cur:
        with cur.copy(f"COPY usage ({columns}) FROM STDIN") as copy:
            for row in rows:
                # SQLite holds naive UTC text; booleans as 0/1.
                copy.write_row((*row[:1], row[1] + "+00", *row[2:17], bool(row[17])))
        cur.execute("ANALYZE usage")


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
    parser.add_argument("--postgres", help="run on PostgreSQL: a URL of a server where a database may be created")
    args = parser.parse_args()
    database_url = None
    if args.postgres:
        import psycopg

        admin = args.postgres.replace("postgresql+psycopg://", "postgresql://")
        name = f"minigate_bench_{os.getpid()}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        database_url = admin.rsplit("/", 1)[0] + "/" + name
    try:
        _run(args, database_url)
    finally:
        if database_url:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _run(args: argparse.Namespace, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, base = _start(folder, database_url)
        try:
            started = time.perf_counter()
            if database_url:
                from minigate.gateway.storage import migrate

                staging = folder / "staging.db"
                migrate(f"sqlite:///{staging}")
                fill_usage(staging, args.rows)
                _copy_to_postgres(staging, database_url)
            else:
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
        backend = "postgresql" if database_url else "sqlite"
        Path(args.json).write_text(json.dumps({"rows": args.rows, "backend": backend, "pages": figures}, indent=2))


if __name__ == "__main__":
    main()

"""Storage faults on a real ``minigate serve`` process: the database locked by another process, the disk full,
and ``kill -9`` under load. Each asserts what the clients saw (answers, how long they took) and what was stored
(every usage row, read with a sqlite3 connection of our own) or how a loss was reported (the JSON log).

See the table at the top of tests/test_faults.py for every fault of issue 7 and where its test is.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import one_provider_config
from tests.fakes.upstream import FakeUpstream, Reply
from tests.gateway_server import ADMIN_KEY
from tests.serve_process import ServeProcess

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]

# Holds SQLite's write lock (BEGIN EXCLUSIVE) from another process for argv[2] seconds.
_LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def ask(gateway: ServeProcess, streamed: bool) -> tuple[str, float]:
    """One request answered completely: ``(its x-request-id, seconds it took)``; raises otherwise."""
    payload = {"model": "default", "messages": MESSAGES, "stream": streamed}
    started = time.monotonic()
    with httpx.stream("POST", f"{gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=30) as r:
        assert r.status_code == 200, r.read()
        if streamed:
            lines = [line.removeprefix("data: ") for line in r.iter_lines() if line]
            assert lines[-1] == "[DONE]", lines
            chunks = [json.loads(line) for line in lines[:-1]]
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
            assert text == "Hello from up"
        else:
            r.read()
            assert r.json()["choices"][0]["message"]["content"] == "Hello from up"
    return r.headers["x-request-id"], time.monotonic() - started


def stored(path: Path) -> dict[str, dict[str, Any]]:
    """Usage rows by request id, read as an operator would."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        return {r["request_id"]: dict(r) for r in db.execute("SELECT * FROM usage")}


def wait_stored(path: Path, ids: list[str], limit: float = 30.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + limit
    while not set(ids) <= set(rows := stored(path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return rows


def events(gateway: ServeProcess, name: str) -> list[dict[str, Any]]:
    return [r for r in gateway.log_records() if r.get("event") == name]


def assert_answered_rows(rows: dict[str, dict[str, Any]], ids: list[str]) -> None:
    for request_id in ids:
        row = rows[request_id]
        assert (row["status"], row["provider"], row["error"]) == (200, "up", None), row
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (1, 3, 4), row


def test_database_locked_by_another_process(tmp_path: Path, upstream: FakeUpstream) -> None:
    # Another process holds the write lock for 8 s, longer than SQLite's 5 s busy timeout. Requests are still
    # answered (the first one waits at most the writer's 2 s for its commit, the next ones not at all), their
    # rows are kept in memory and stored once the lock goes, and the outage is logged when it starts and ends.
    with ServeProcess(one_provider_config(upstream), tmp_path / "gw") as gateway:
        warm, _ = ask(gateway, streamed=False)
        locker = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(gateway.db_path), "8"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            locked_at = time.monotonic()
            answered = [ask(gateway, streamed=i % 2 == 1) for i in range(6)]
            assert time.monotonic() - locked_at < 7.5, "the requests did not all run while the lock was held"
            latencies = [seconds for _, seconds in answered]
            assert latencies[0] < 4.5 and max(latencies[1:]) < 2.0, latencies
            assert set(stored(gateway.db_path)) == {warm}  # nothing could be written meanwhile
            assert locker.wait(30) == 0
        finally:
            locker.kill()
            locker.wait()
            assert locker.stdout is not None
            locker.stdout.close()
        ids = [warm, *(request_id for request_id, _ in answered)]
        rows = wait_stored(gateway.db_path, ids)
        assert_answered_rows(rows, ids)
        assert len(rows) == len(ids)  # each row once, none twice
        gateway.signal(signal.SIGTERM)
        assert gateway.wait(30) == 0
        # Read once the process has ended: the writer logs the recovery just after the commit the rows show.
        [held] = events(gateway, "usage_held")
        assert "database is locked" in held["error"] and held["level"] == "WARNING"
        assert len(events(gateway, "usage_recovered")) == 1
    assert not events(gateway, "usage_row_lost")
    assert not [r for r in gateway.log_records() if r["level"] == "ERROR"]


def readiness(gateway: ServeProcess) -> httpx.Response:
    return httpx.get(gateway.base + "/ready", timeout=10)


def wait_ready(gateway: ServeProcess, status: int, limit: float = 60.0) -> httpx.Response:
    """Poll /ready until it answers ``status`` (at most ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while (answer := readiness(gateway)).status_code != status and time.monotonic() < deadline:
        time.sleep(0.2)
    return answer


def test_ready_turns_red_while_rows_wait_for_the_database(tmp_path: Path, upstream: FakeUpstream) -> None:
    # The database answers reads (so its own check passes) but refuses writes: rows are held, and after a few
    # seconds /ready says so, for a load balancer or an operator; once the rows are stored it is green again.
    with ServeProcess(one_provider_config(upstream), tmp_path / "gw") as gateway:
        warm, _ = ask(gateway, streamed=False)
        assert readiness(gateway).status_code == 200
        locker = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(gateway.db_path), "120"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            held, _ = ask(gateway, streamed=True)
            red = wait_ready(gateway, 503)
            assert red.status_code == 503, red.text
            assert red.json()["checks"] == {
                "accepting": True,
                "database": True,
                "default_chain": True,
                "usage_stored": False,
            }
            assert "usage rows have waited" in red.json()["reason"]
        finally:
            locker.kill()  # the lock goes with the process
            locker.wait()
            assert locker.stdout is not None
            locker.stdout.close()
        assert wait_ready(gateway, 200).status_code == 200
        rows = wait_stored(gateway.db_path, [warm, held])
        assert_answered_rows(rows, [warm, held])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs; the tests run as root) for the gateway's database."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"the disk-full test needs to mount a small tmpfs (as root): {done.stderr.decode()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the filler file, to delete to free the space again."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 512, 1):  # big blocks, then the last few bytes
            for _ in range(2000):  # bounded: 128 MiB at most, far more than the disk holds
                try:
                    os.write(fd, b"\0" * size)
                except OSError as err:
                    assert err.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def metric(gateway: ServeProcess, name: str) -> float:
    """One unlabelled value from the gateway's /metrics."""
    text = httpx.get(gateway.base + "/metrics", timeout=10).text
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


def test_disk_full_keeps_rows_then_reports(tmp_path: Path, upstream: FakeUpstream, small_disk: Path) -> None:
    gateway = ServeProcess(one_provider_config(upstream, data_dir=str(small_disk)), tmp_path / "gw")
    db_path = small_disk / "minigate.db"
    with gateway:
        warm, _ = ask(gateway, streamed=False)
        filler = fill(small_disk)
        # The disk is full: answers go on at full speed, rows wait in memory.
        answered = [ask(gateway, streamed=i % 2 == 1) for i in range(4)]
        assert max(seconds for _, seconds in answered) < 4.5
        [held] = events(gateway, "usage_held")
        assert "disk is full" in held["error"]
        assert set(stored(db_path)) == {warm}
        assert metric(gateway, "minigate_usage_rows_held") == 4  # what an operator's alert would read
        # Space comes back: every held row is stored, in order, once.
        filler.unlink()
        ids = [warm, *(request_id for request_id, _ in answered)]
        rows = wait_stored(db_path, ids)
        assert_answered_rows(rows, ids)
        assert metric(gateway, "minigate_usage_rows_held") == 0
        assert metric(gateway, "minigate_usage_rows_lost") == 0
        assert [r["request_id"] for r in sorted(rows.values(), key=lambda r: r["id"])] == ids
        # Full again, and the gateway is stopped before space comes back: the row cannot be kept, so it is
        # reported, with everything needed to restore it, and the gateway still exits cleanly.
        filler = fill(small_disk)
        last, _ = ask(gateway, streamed=True)
        gateway.signal(signal.SIGTERM)
        assert gateway.wait(60) == 0
    [lost] = events(gateway, "usage_row_lost")
    assert lost["level"] == "ERROR" and lost["row"]["request_id"] == last
    assert (lost["row"]["status"], lost["row"]["completion_tokens"], lost["row"]["streamed"]) == (200, 3, True)
    assert "Traceback" not in gateway.log_text()
    filler.unlink()
    assert set(stored(db_path)) == set(ids)
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_kill_9_under_load_keeps_answered_rows(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.set_default(Reply(chunks=6, interval=0.01))
    gateway = ServeProcess(one_provider_config(upstream), tmp_path / "gw").start()
    answered: list[str] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def client(i: int) -> None:
        with httpx.Client(timeout=30) as http:
            for n in range(10_000):
                if stop.is_set():
                    return
                try:
                    payload = {"model": "default", "messages": MESSAGES, "stream": (i + n) % 2 == 1}
                    with http.stream("POST", f"{gateway.url}/chat/completions", headers=AUTH, json=payload) as r:
                        body = b"".join(r.iter_bytes())
                    complete = body.endswith(b"data: [DONE]\n\n") or (not payload["stream"] and b'"usage"' in body)
                    if r.status_code == 200 and complete:
                        answered.append(r.headers["x-request-id"])
                except httpx.TransportError:
                    return  # the gateway is gone
                except BaseException as err:  # collected, asserted below
                    failed.append(err)
                    return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(answered) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gateway.process is not None
        os.kill(gateway.process.pid, signal.SIGKILL)  # mid-load: requests are in flight
        gateway.process.wait(10)
        killed_with = len(answered)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failed == [] and killed_with >= 60
    # Restarted on the same data: every request that got a complete answer has its row.
    gateway.start()
    try:
        rows = stored(gateway.db_path)
        missing = [request_id for request_id in answered if request_id not in rows]
        assert missing == [], f"{len(missing)} of {len(answered)} answered requests have no row"
        assert all(rows[request_id]["status"] == 200 for request_id in answered)
        with contextlib.closing(sqlite3.connect(gateway.db_path)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        upstream.set_default(Reply())
        after, _ = ask(gateway, streamed=False)
        assert after in wait_stored(gateway.db_path, [after])
    finally:
        gateway.stop()

"""UsageWriter: group commit on SQLite and PostgreSQL, durability on return, and failure isolation."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import text

import minigate
from minigate.gateway.storage import Database, KeyStore, UsageRecord, UsageWriteError, UsageWriter, open_database
from minigate.gateway.storage.usage import STOPPED, outcome
from tests.storage.conftest import Backend

_REPO = str(Path(minigate.__file__).resolve().parent.parent)


def _row(request_id: str, **kw: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "endpoint": "chat/completions",
        "requested_model": "fast",
        "status": 200,
        "latency_ms": 12.5,
    }
    fields.update(kw)
    return UsageRecord(request_id=request_id, **fields)


@pytest.fixture
async def writer(db: Database) -> AsyncIterator[UsageWriter]:
    w = UsageWriter(db)
    await w.start()
    yield w
    await w.close()


async def test_thousand_concurrent_records_all_land(db: Database, backend: Backend) -> None:
    w = UsageWriter(db)
    await w.start()
    await asyncio.gather(*(w.record(_row(f"r{i}", total_tokens=i)) for i in range(1000)))
    await w.close()
    ids = {r[0] for r in backend.rows("SELECT request_id FROM usage")}
    assert ids == {f"r{i}" for i in range(1000)}
    totals = await w.totals()
    assert totals["requests"] == 1000
    assert totals["total_tokens"] == sum(range(1000))


async def test_row_committed_when_record_returns(writer: UsageWriter, backend: Backend) -> None:
    # An independent connection (as another process would have) sees each row as soon as record returns.
    with backend.engine.connect() as other:
        for i in range(20):
            await writer.record(_row(f"c{i}"))
            found = other.execute(text("SELECT count(*) FROM usage WHERE request_id = :r"), {"r": f"c{i}"}).scalar()
            other.rollback()  # a new snapshot for the next read
            assert found == 1


def test_rows_survive_kill_9(db: Database, backend: Backend) -> None:
    # The child records rows, reports how many calls returned, and is killed without any cleanup.
    code = """
import asyncio, sys
from minigate.gateway.storage import UsageRecord, UsageWriter, open_database

async def main():
    db = await open_database(sys.argv[1])
    w = UsageWriter(db)
    await w.start()
    for i in range(50):
        await w.record(UsageRecord(request_id=f"k{i}", endpoint="embeddings", requested_model="m",
                                   status=200, latency_ms=1.0))
    print("recorded", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_REPO, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code, backend.url], env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"recorded"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert backend.count("usage") == 50


async def test_failing_row_fails_only_its_caller(
    writer: UsageWriter, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    bad = _row("bad", requested_model=cast(str, None))  # violates NOT NULL
    results = await asyncio.gather(
        *(writer.record(_row(f"g{i}")) for i in range(50)),
        writer.record(bad),
        *(writer.record(_row(f"h{i}")) for i in range(50)),
        return_exceptions=True,
    )
    failures = [r for r in results if r is not True]
    assert len(failures) == 1
    assert isinstance(failures[0], UsageWriteError)
    assert failures[0].__cause__ is not None  # the database's own error
    assert "retrying row by row" in caplog.text  # it was one batch that failed, not one row alone
    # The writer carries on serving.
    await writer.record(_row("after"))
    assert backend.count("usage") == 101


async def _until(predicate: Any, limit: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_database_wide_failure_holds_rows_until_it_recovers(
    writer: UsageWriter, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    assert await writer.record(_row("before")) is True
    backend.execute("ALTER TABLE usage RENAME TO usage_away")
    started = asyncio.get_running_loop().time()
    results = await asyncio.gather(*(writer.record(_row(f"x{i}")) for i in range(10)))
    assert results == [False] * 10  # kept in memory, not refused; and the callers did not wait for the database
    assert asyncio.get_running_loop().time() - started < 3
    assert writer.degraded and writer.held == 10 and writer.lost == 0
    assert await writer.record(_row("during")) is False  # no wait at all while rows are held
    assert "the database refuses usage rows" in caplog.text
    backend.execute("ALTER TABLE usage_away RENAME TO usage")
    await _until(lambda: writer.held == 0)
    assert not writer.degraded and "every held row is stored" in caplog.text
    assert await writer.record(_row("after")) is True
    ids = [r[0] for r in backend.rows("SELECT request_id FROM usage ORDER BY id")]
    assert ids == ["before", *(f"x{i}" for i in range(10)), "during", "after"]  # in order, none twice


async def test_more_held_rows_than_max_held_are_refused_and_logged(
    db: Database, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    w = UsageWriter(db, max_held=3, close_timeout=0.5)
    await w.start()
    backend.execute("ALTER TABLE usage RENAME TO usage_away")
    assert [await w.record(_row(f"y{i}")) for i in range(3)] == [False] * 3
    with pytest.raises(UsageWriteError):
        await w.record(_row("one-too-many", total_tokens=42))
    assert w.lost == 1
    lost = [r for r in caplog.records if getattr(r, "event", None) == "usage_row_lost"]
    assert [r.row["request_id"] for r in lost] == ["one-too-many"]  # type: ignore[attr-defined]
    assert lost[0].row["total_tokens"] == 42  # type: ignore[attr-defined]  # enough to restore it by hand
    # Closing while the database still refuses them: tried for close_timeout, then each held row is logged.
    await w.close()
    assert w.lost == 4
    lost = [r for r in caplog.records if getattr(r, "event", None) == "usage_row_lost"]
    assert [r.row["request_id"] for r in lost] == ["one-too-many", "y0", "y1", "y2"]  # type: ignore[attr-defined]
    backend.execute("ALTER TABLE usage_away RENAME TO usage")
    assert backend.count("usage") == 0


async def test_a_commit_slower_than_ack_timeout_lets_callers_go_on(db: Database, backend: Backend) -> None:
    # Another writer holds the lock for 1.5 s (less than SQLite's busy timeout): the caller is let go after
    # ack_timeout with its row still queued, and the row is committed once the lock goes.
    w = UsageWriter(db, ack_timeout=0.3)
    await w.start()
    try:
        assert await w.record(_row("warm-up")) is True
        release = _take_write_lock(backend)
        loop = asyncio.get_running_loop()
        try:
            loop.call_later(1.5, release)
            started = loop.time()
            assert await w.record(_row("slow")) is False
            assert 0.25 <= loop.time() - started < 1.2
            assert w.degraded
            await _until(lambda: backend.count("usage") == 2)
        finally:
            release()
        assert await w.record(_row("normal")) is True  # commits work again: callers wait for theirs
        assert not w.degraded and w.lost == 0
    finally:
        await w.close()
    assert backend.count("usage") == 3


def _take_write_lock(backend: Backend) -> Any:
    """Hold the usage table's write lock from another connection; returns the idempotent release."""
    if backend.name == "sqlite":
        other = sqlite3.connect(backend.sqlite_path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
    else:
        conn = backend.engine.connect()
        conn.execute(text("LOCK TABLE usage IN EXCLUSIVE MODE"))
    done = []

    def release() -> None:
        if not done:
            done.append(True)
            if backend.name == "sqlite":
                other.execute("COMMIT")
                other.close()
            else:
                conn.commit()
                conn.close()

    return release


async def test_waits_for_another_writers_lock(writer: UsageWriter, backend: Backend) -> None:
    # Another process holding a write lock briefly delays the commit (busy_timeout on SQLite, a lock wait on
    # PostgreSQL) instead of failing it.
    await writer.record(_row("warm-up"))  # the writer's connection is open before the lock is taken
    loop = asyncio.get_running_loop()
    if backend.name == "sqlite":
        other = sqlite3.connect(backend.sqlite_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        release = functools.partial(other.execute, "COMMIT")
    else:
        conn = backend.engine.connect()
        conn.execute(text("LOCK TABLE usage IN EXCLUSIVE MODE"))
        release = conn.commit
    try:
        loop.call_later(0.3, release)
        started = loop.time()
        await writer.record(_row("patient"))
        assert loop.time() - started >= 0.25
    finally:
        (other if backend.name == "sqlite" else conn).close()
    assert backend.count("usage") == 2


async def test_fields_round_trip(writer: UsageWriter) -> None:
    created = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    hops = [{"provider": "local", "model": "phi", "error": "timeout", "status": 504}]
    await writer.record(
        _row(
            "full",
            created_at=created,
            key_id=7,
            endpoint="completions",
            agent="coder",
            provider="openai",
            model="gpt-4o-mini",
            fallbacks=1,
            hops=hops,
            status=200,
            prompt_tokens=3,
            completion_tokens=4,
            total_tokens=7,
            latency_ms=250.0,
            ttft_ms=40.5,
            streamed=True,
        )
    )
    await writer.record(_row("minimal", status=502, error="x" * 10_000))
    newest, full = await writer.query_recent(10)
    assert newest["request_id"] == "minimal"
    assert newest["hops"] is None and newest["streamed"] is False and newest["key_id"] is None
    assert len(newest["error"]) < 10_000  # oversized upstream errors are truncated
    assert newest["created_at"].tzinfo is not None
    assert full["created_at"] == created
    assert full["hops"] == hops
    assert full["streamed"] is True
    who = (full["key_id"], full["agent"], full["provider"], full["model"])
    assert who == (7, "coder", "openai", "gpt-4o-mini")
    assert (full["prompt_tokens"], full["completion_tokens"], full["total_tokens"]) == (3, 4, 7)
    assert (full["latency_ms"], full["ttft_ms"], full["fallbacks"]) == (250.0, 40.5, 1)
    totals = await writer.totals()
    assert totals == {
        "requests": 2,
        "errors": 1,
        "stopped": 0,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
    }


async def test_close_flushes_pending_rows(db: Database, backend: Backend) -> None:
    w = UsageWriter(db)
    await w.start()
    tasks = [asyncio.create_task(w.record(_row(f"p{i}"))) for i in range(300)]
    await asyncio.sleep(0)  # let every task enqueue its row
    await w.close()
    await asyncio.gather(*tasks)
    assert backend.count("usage") == 300


async def test_record_needs_a_running_writer(db: Database) -> None:
    w = UsageWriter(db)
    with pytest.raises(UsageWriteError):
        await w.record(_row("early"))
    await w.start()
    await w.close()
    with pytest.raises(UsageWriteError):
        await w.record(_row("late"))


async def test_unencodable_hops_rejected(writer: UsageWriter) -> None:
    with pytest.raises(UsageWriteError):
        await writer.record(_row("x", hops=[{"provider": object()}]))


async def test_empty_totals(writer: UsageWriter) -> None:
    assert await writer.totals() == {
        "requests": 0,
        "errors": 0,
        "stopped": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }
    assert await writer.query_recent(5) == []


async def test_dropped_connections_cost_no_row(pg_backend: Backend) -> None:
    # PostgreSQL restarted or a proxy cut the connections: the writer reconnects within its one retry, and the
    # app's pool checks connections before use, so neither a usage row nor a key lookup fails.
    db = await open_database(pg_backend.url)
    writer = UsageWriter(db)
    await writer.start()
    try:
        keys = KeyStore(db, cache_ttl=0)
        _, token = await keys.create("k")
        await writer.record(_row("before"))
        killed = pg_backend.scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert killed >= 2  # the writer's connection and the pool's
        await writer.record(_row("after"))
        assert await keys.verify(token) is not None
    finally:
        await writer.close()
        await db.close()
    assert [r[0] for r in pg_backend.rows("SELECT request_id FROM usage ORDER BY id")] == ["before", "after"]


async def test_stopped_answers_are_counted_apart_from_errors(writer: UsageWriter) -> None:
    await writer.record(_row("ok"))
    await writer.record(_row("stopped", status=STOPPED, completion_tokens=7, total_tokens=7))
    await writer.record(_row("failed", status=502))
    totals = await writer.totals()
    assert (totals["requests"], totals["errors"], totals["stopped"], totals["completion_tokens"]) == (3, 1, 1, 7)
    assert [outcome(s) for s in (200, 302, STOPPED, 400, 502)] == ["ok", "ok", "stopped", "error", "error"]

"""UsageWriter and hostile values, on SQLite and PostgreSQL: a row the database cannot take is set aside while
the others go on, counts are checked again before they are written, how long rows have waited is known, and
no stored value breaks the totals."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from minigate.gateway.storage import Database, UsageRecord, UsageWriteError, UsageWriter
from tests.storage.conftest import Backend

HUGE = 10**30


def _row(request_id: str, **kw: Any) -> UsageRecord:
    fields: dict[str, Any] = {"endpoint": "chat/completions", "requested_model": "fast", "status": 200}
    fields.update({"latency_ms": 12.5, **kw})
    return UsageRecord(request_id=request_id, **fields)


def _lost(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "usage_row_lost"]


@pytest.fixture
async def writer(db: Database) -> AsyncIterator[UsageWriter]:
    w = UsageWriter(db)
    await w.start()
    yield w
    await w.close()


@pytest.mark.parametrize("key_id", [HUGE, -HUGE, 2**63], ids=["huge", "negative", "int64+1"])
async def test_a_row_the_database_cannot_take_is_set_aside(
    writer: UsageWriter, backend: Backend, caplog: pytest.LogCaptureFixture, key_id: int
) -> None:
    # A value no integer column holds (SQLite's driver raises OverflowError, PostgreSQL answers "out of range"):
    # the row's own fault, not an outage. It fails its caller and is logged; nothing is held.
    results = await asyncio.gather(
        *(writer.record(_row(f"g{i}")) for i in range(20)),
        writer.record(_row("bad", key_id=key_id, total_tokens=42)),
        *(writer.record(_row(f"h{i}")) for i in range(20)),
        return_exceptions=True,
    )
    failures = [r for r in results if r is not True]
    assert len(failures) == 1 and isinstance(failures[0], UsageWriteError), results
    assert writer.held == 0 and not writer.degraded and writer.held_for == 0
    [lost] = _lost(caplog)
    assert lost.levelname == "ERROR" and "cannot take its contents" in lost.getMessage()
    assert lost.row["request_id"] == "bad" and lost.row["total_tokens"] == 42  # type: ignore[attr-defined]
    assert writer.lost == 1
    # Alone, too (no batch to retry row by row), and the writer still goes on.
    with pytest.raises(UsageWriteError):
        await writer.record(_row("bad-alone", key_id=key_id))
    assert await writer.record(_row("after")) is True
    assert writer.held == 0 and writer.lost == 2
    assert backend.count("usage") == 41


async def test_a_value_the_driver_cannot_send_is_set_aside(
    writer: UsageWriter, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # Neither driver can bind an arbitrary object: its ProgrammingError comes from the driver, not the database.
    with pytest.raises(UsageWriteError):
        await writer.record(_row("odd", agent=object()))
    assert writer.held == 0 and [r.row["request_id"] for r in _lost(caplog)] == ["odd"]  # type: ignore[attr-defined]
    assert await writer.record(_row("after")) is True
    assert backend.count("usage") == 1


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ((HUGE, 3, HUGE + 3), (None, 3, None)),
        ((2**63 - 1, 2**63 - 1, 2**63 - 1), (None, None, None)),
        ((-5, 3, -2), (None, 3, None)),
        ((True, False, 1), (None, None, 1)),
        (("12", 3.0, 15.5), (None, None, None)),
        ((2, 3, 99), (2, 3, 5)),
        ((10**9, 10**9, None), (10**9, 10**9, 2 * 10**9)),
    ],
)
async def test_counts_are_checked_again_in_the_row(
    writer: UsageWriter, backend: Backend, given: tuple[Any, ...], stored: tuple[Any, ...]
) -> None:
    # Defence in depth: a caller that skipped minigate.gateway.core.tokens cannot store a count the reports would choke
    # on.
    prompt, completion, total = given
    row = _row("r", prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)
    assert await writer.record(row) is True
    assert backend.rows("SELECT prompt_tokens, completion_tokens, total_tokens FROM usage") == [stored]


async def test_durations_are_checked_in_the_row(writer: UsageWriter, backend: Backend) -> None:
    for i, (latency, ttft) in enumerate([(float("nan"), float("inf")), (-3.0, -1.0), (1e300, True)]):
        assert await writer.record(_row(f"d{i}", latency_ms=latency, ttft_ms=ttft)) is True
    assert backend.rows("SELECT latency_ms, ttft_ms FROM usage ORDER BY id") == [(0.0, None)] * 3


async def _until(predicate: Any, limit: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_held_for_says_how_long_rows_wait(writer: UsageWriter, backend: Backend) -> None:
    assert await writer.record(_row("before")) is True
    assert writer.held_for == 0
    backend.execute("ALTER TABLE usage RENAME TO usage_away")
    assert await writer.record(_row("x")) is False
    first = writer.held_for
    assert first > 0
    await _until(lambda: writer.held_for > first)  # it grows while the database refuses them
    backend.execute("ALTER TABLE usage_away RENAME TO usage")
    await _until(lambda: writer.held == 0)
    assert writer.held_for == 0


async def test_no_stored_value_breaks_the_totals(writer: UsageWriter, backend: Backend) -> None:
    # Rows written before there were checks, or by hand: the largest values each column holds, and negatives.
    top = 2**63 - 1 if backend.name == "sqlite" else 2**31 - 1
    insert = (
        "INSERT INTO usage (request_id, created_at, endpoint, requested_model, fallbacks, status, prompt_tokens,"
        " completion_tokens, total_tokens, latency_ms, streamed) VALUES (:id, CURRENT_TIMESTAMP, 'chat/completions',"
        " 'm', 0, 200, :p, :c, :t, 5.0, false)"
    )
    for i, (p, c, t) in enumerate([(top, top, top), (top, top, top), (-1998674, -3, -1998677), (2, 3, 5)]):
        backend.execute(insert, {"id": f"s{i}", "p": p, "c": c, "t": t})
    totals = await writer.totals()
    assert totals == {
        "requests": 4,
        "errors": 0,
        "stopped": 0,
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
    }

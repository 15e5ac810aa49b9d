"""The usage page's aggregate query gives the same figures on SQLite and PostgreSQL (checked against Python)."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import Integer, column, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

from minigate.gateway.storage import Database, UsageRecord, UsageWriter
from minigate.gateway.storage.sql import epoch_bucket, floor_int
from minigate.gateway.storage.tables import utcnow
from minigate.gateway.storage.usage_query import (
    RANGES,
    SUMMARY_GROUPS,
    Filters,
    recent_rows,
    usage_stats,
    usage_summary,
)
from tests.storage.conftest import Backend


def _bin(latency_ms: float) -> int:
    return math.floor(math.log(latency_ms + 1) * 12)


async def _store(db: Database, rows: list[UsageRecord]) -> None:
    writer = UsageWriter(db)
    await writer.start()
    try:
        for row in rows:
            await writer.record(row)
    finally:
        await writer.close()


def _rows(seed: int = 7) -> list[UsageRecord]:
    rng = random.Random(seed)
    now = utcnow()
    rows = []
    for i in range(400):
        agent = rng.choice(["default", "coder", None])
        failed = rng.random() < 0.1
        # Latencies just above and below a bin's edge: rounding instead of flooring would move them.
        edge = rng.randint(30, 100)
        latency = math.exp((edge + rng.choice([0.1, 0.45, 0.55, 0.9])) / 12) - 1
        rows.append(
            UsageRecord(
                request_id=f"q{i}",
                endpoint="chat/completions",
                requested_model=agent or "x",
                agent=agent,
                provider=None if failed else rng.choice(["echo", "remote"]),
                model=None if failed else "m",
                status=502 if failed else 200,
                fallbacks=1 if rng.random() < 0.2 else 0,
                total_tokens=None if failed else rng.randint(1, 500),
                key_id=rng.choice([None, 1, 2]),
                user_id=rng.choice([None, 7]),
                cost=None if failed else rng.choice([None, 0.25, 0.5]),
                latency_ms=latency,
                # Half a second off the bucket edges, so that sub-millisecond rounding cannot move a row.
                created_at=now - timedelta(seconds=rng.randint(0, 86000) + 0.5),
            )
        )
    return rows


@pytest.mark.parametrize(("range_", "by"), [("24h", "agent"), ("1h", "model"), ("7d", "key"), ("30d", "provider")])
async def test_stats_match_python(db: Database, range_: str, by: str) -> None:
    rows = _rows()
    await _store(db, rows)
    filters = Filters(range=range_, by=by)
    stats = await usage_stats(db, filters, {1: "laptop", 2: "ci"})

    seconds, bucket, _ = RANGES[range_]
    now = utcnow()
    since = now - timedelta(seconds=seconds)
    shown = [r for r in rows if r.created_at >= since]
    assert stats.overall.requests == len(shown)
    assert stats.overall.tokens == sum(r.total_tokens or 0 for r in shown)
    assert stats.overall.errors == sum(r.status >= 400 for r in shown)
    assert stats.overall.fallbacks == sum(r.fallbacks > 0 for r in shown)
    assert stats.overall.histogram == dict(Counter(_bin(r.latency_ms) for r in shown))

    first = int(since.timestamp()) // bucket
    count = seconds // bucket
    expected = Counter(min(max(int(r.created_at.timestamp()) // bucket - first - 1, 0), count - 1) for r in shown)
    assert [t.requests for t in stats.per_bucket] == [expected.get(i, 0) for i in range(count)]

    def group(r: UsageRecord) -> str:
        if by == "model":
            return f"{r.provider}/{r.model}" if r.provider else "(none)"
        if by == "provider":
            return r.provider or "(none)"
        if by == "key":
            return {1: "laptop", 2: "ci"}.get(r.key_id or 0, "no key (bootstrap / web)")
        return r.agent or "(none)"

    assert {g: t.requests for g, t in stats.per_group.items()} == dict(Counter(group(r) for r in shown))


@pytest.mark.parametrize("by", SUMMARY_GROUPS)
async def test_summary_matches_python(db: Database, by: str) -> None:
    rows = _rows(seed=5)
    await _store(db, rows)
    found = await usage_summary(db, Filters(range="7d", key="none" if by == "person" else ""), by)
    keyed = {
        "agent": lambda r: r.agent or "(none)",
        "model": lambda r: f"{r.provider}/{r.model}" if r.provider else "(none)",
        "provider": lambda r: r.provider or "(none)",
        "key": lambda r: r.key_id,
        "person": lambda r: r.user_id,
        "day": lambda r: r.created_at.date().isoformat(),
    }[by]
    shown = [r for r in rows if by != "person" or r.key_id is None]
    assert {s.group: s.requests for s in found} == dict(Counter(keyed(r) for r in shown))
    for summed in found:
        mine = [r for r in shown if keyed(r) == summed.group]
        assert summed.total_tokens == sum(r.total_tokens or 0 for r in mine)
        assert summed.errors == sum(r.status >= 400 for r in mine)
        assert summed.cost == pytest.approx(sum(r.cost or 0.0 for r in mine))


async def test_filters_and_recent_rows(db: Database) -> None:
    rows = _rows(seed=3)
    await _store(db, rows)
    errors = Filters(range="24h", status="error", agent="coder")
    stats = await usage_stats(db, errors, {})
    want = [r for r in rows if r.status >= 400 and r.agent == "coder"]
    assert stats.overall.requests == len(want)
    recent = await recent_rows(db, Filters(range="24h", key="none"), limit=500)
    # Rows were stored one by one in list order, so their ids are 1, 2, ...
    assert [r["id"] for r in recent] == [i + 1 for i in reversed(range(len(rows))) if rows[i].key_id is None]
    page = await recent_rows(db, Filters(range="24h"), limit=10, before=recent[0]["id"])
    assert len(page) == 10 and all(r["id"] < recent[0]["id"] for r in page)


def test_portable_expressions_compile_per_dialect() -> None:
    # The same statement text in SELECT and GROUP BY on both, with no bound parameters to tell them apart.
    stmt = select(epoch_bucket(column("t"), 1800), floor_int(column("x", Integer) * 12))
    lite = str(stmt.compile(dialect=sqlite.dialect()))
    pg = str(stmt.compile(dialect=postgresql.dialect()))
    assert "julianday(t)" in lite and "/ 1800" in lite and "CAST(x * " in lite
    assert "EXTRACT(EPOCH FROM t)" in pg and "/ 1800" in pg and "CAST(floor(x * " in pg
    with pytest.raises(ValueError):
        epoch_bucket(literal_column("t"), 0)


async def test_no_stored_value_breaks_the_page_queries(db: Database, backend: Backend) -> None:
    # Rows written before there were checks, or by hand: the largest counts each column holds (two of 2**63-1
    # overflowed SQLite's sum()), negatives, and latencies that are not any (ln of them fails on PostgreSQL).
    top = 2**63 - 1 if backend.name == "sqlite" else 2**31 - 1
    insert = (
        "INSERT INTO usage (request_id, created_at, endpoint, requested_model, agent, fallbacks, status,"
        " prompt_tokens, completion_tokens, total_tokens, latency_ms, streamed) VALUES (:id, :at,"
        " 'chat/completions', 'm', 'a', 0, 200, :t, :t, :t, :ms, false)"
    )
    at = utcnow() - timedelta(minutes=5)
    for i, (tokens, ms) in enumerate([(top, 5.0), (top, -1.0), (-1998671, 1e300), (5, 20.0), (None, 0.0)]):
        backend.execute(insert, {"id": f"s{i}", "at": at, "t": tokens, "ms": ms})
    for filters in (Filters(range="1h"), Filters(range="24h", by="model"), Filters(range="7d", key="9" * 40)):
        stats = await usage_stats(db, filters, {})
        want = 0 if filters.key else 5
        assert stats.overall.requests == want and stats.overall.tokens == (5 if want else 0)
        p99 = stats.overall.percentile(0.99)
        assert p99 is None or p99 < 30
    summed = await usage_summary(db, Filters(range="1h"), "day")
    assert sum(s.requests for s in summed) == 5 and sum(s.total_tokens for s in summed) == 5
    recent = await recent_rows(db, Filters(range="1h"), before=2**70)
    assert [r["total_tokens"] for r in recent] == [None, 5, None, None, None]
    assert [r["latency_ms"] for r in recent] == [0.0, 20.0, None, None, 5.0]

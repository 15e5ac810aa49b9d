"""Refused requests coalesced into usage rows on SQLite and PostgreSQL: one row per minute and kind, the cap's
overflow row, and the usage queries that count them apart."""

from __future__ import annotations

import time

from minigate.gateway.ops.refusals import OVERFLOW, Refusals
from minigate.gateway.storage import Database, UsageRecord, UsageWriter
from minigate.gateway.storage.usage_query import Filters, recent_rows, usage_stats
from tests.storage.conftest import Clock


async def test_refusals_become_few_rows_that_the_queries_count_apart(db: Database) -> None:
    writer = UsageWriter(db)
    await writer.start()
    clock = Clock(time.time() // 60 * 60 - 120)  # the start of the minute before last
    refusals = Refusals(max_entries=3, clock=clock)
    refusals.start(writer, lambda key_id: 7 if key_id == 5 else None, every=3600)
    for _ in range(40):
        refusals.note(401, "invalid_api_key", None, "10.0.0.9", "chat/completions", None)
    refusals.note(429, "budget_exceeded", 5, "10.0.0.9", "chat/completions", "default")
    refusals.note(403, "model_not_allowed", 5, "10.0.0.9", "responses", "x" * 5000)
    for n in range(4):  # beyond the cap of three kinds a minute
        refusals.note(403, "model_not_allowed", 5, f"10.0.1.{n}", "chat/completions", "cloud")
    assert await refusals.flush() == 0  # the minute has not ended
    clock.now += 60
    refusals.note(401, "invalid_api_key", None, "10.0.0.9", "models", None)  # the next minute
    assert await refusals.flush() == 4  # three kinds and the overflow row of the first minute
    await writer.record(UsageRecord(request_id="served", endpoint="chat/completions", requested_model="default",
                                    status=200, latency_ms=120.0, total_tokens=30))  # fmt: skip
    await refusals.close()  # the current minute too
    rows = await recent_rows(db, Filters(range="1h", status="refused"), limit=100)
    kinds = sorted((r["status"], r["error"], r["key_id"], r["user_id"], r["refused"], r["client"]) for r in rows)
    assert kinds == [
        (401, "invalid_api_key", None, None, 1, "10.0.0.9"),
        (401, "invalid_api_key", None, None, 40, "10.0.0.9"),
        (403, "model_not_allowed", 5, 7, 1, "10.0.0.9"),
        (403, OVERFLOW, None, None, 4, None),
        (429, "budget_exceeded", 5, 7, 1, "10.0.0.9"),
    ]
    assert all(r["outcome"] == "refused" and r["total_tokens"] is None for r in rows)
    assert {len(r["requested_model"]) for r in rows} <= {0, 7, 200}  # the model asked, bounded
    await writer.close()
    stats = await usage_stats(db, Filters(range="1h"), {})
    served = await recent_rows(db, Filters(range="1h", status="ok"))
    assert [(r["status"], r["total_tokens"], r["refused"]) for r in served] == [(200, 30, None)]
    assert (stats.overall.requests, stats.overall.refused) == (48, 47)
    assert stats.overall.errors == 0 and stats.overall.tokens == 30
    assert sum(stats.overall.histogram.values()) == 1  # only the served request has a latency

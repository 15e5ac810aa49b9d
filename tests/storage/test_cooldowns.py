"""SharedCooldowns: replicas (two views over one database) learn each other's cooldowns at their next sync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from minigate.gateway.storage import Database, SharedCooldowns, open_database
from tests.storage.conftest import Backend, Clock


@pytest.fixture
async def replicas(backend: Backend) -> AsyncIterator[tuple[SharedCooldowns, SharedCooldowns, Clock]]:
    """Two replicas' views, each over its own connection pool, sharing one clock."""
    clock = Clock()
    first, second = await open_database(backend.url), await open_database(backend.url)
    a, b = SharedCooldowns(first, clock=clock), SharedCooldowns(second, clock=clock)
    yield a, b, clock
    await first.close()
    await second.close()


async def test_a_cooldown_reaches_the_other_replica(replicas: tuple[SharedCooldowns, SharedCooldowns, Clock]) -> None:
    a, b, clock = replicas
    a.cooled("openai/gpt-4o", 30.0, 1, "429 rate limited")
    assert a.cooling("openai/gpt-4o") == 30.0  # its own view at once
    assert b.cooling("openai/gpt-4o") == 0.0  # the other one's at its next sync
    assert await a.sync() and await b.sync()
    assert b.cooling("openai/gpt-4o") == 30.0 and b.level("openai/gpt-4o") == 1
    assert b.get("openai/gpt-4o") is not None and b.snapshot()["openai/gpt-4o"]["last_error"] == "429 rate limited"
    clock.now += 10
    assert b.cooling("openai/gpt-4o") == 20.0
    assert b.cooling("other/model") == 0.0 and b.level("other/model") == 0


async def test_later_end_and_higher_level_win(replicas: tuple[SharedCooldowns, SharedCooldowns, Clock]) -> None:
    a, b, clock = replicas
    a.cooled("p/m", 60.0, 3, "long")
    await a.sync()
    clock.now += 1
    b.cooled("p/m", 5.0, 1, "short")  # b had not heard of a's cooldown yet
    await b.sync()
    await a.sync()
    for view in (a, b):
        assert view.cooling("p/m") == 59.0
        assert view.level("p/m") == 3
        assert view.snapshot()["p/m"]["last_error"] == "short"  # the newest error


async def test_success_ends_the_backoff_everywhere(replicas: tuple[SharedCooldowns, SharedCooldowns, Clock]) -> None:
    a, b, clock = replicas
    a.cooled("p/m", 5.0, 2, "down")
    await a.sync()
    await b.sync()
    clock.now += 6  # the cooldown is over; b's trial request succeeds
    b.recovered("p/m")
    assert b.level("p/m") == 0
    await b.sync()
    await a.sync()
    assert a.level("p/m") == 0 and a.get("p/m") is None


async def test_success_does_not_end_a_newer_cooldown(replicas: tuple[SharedCooldowns, SharedCooldowns, Clock]) -> None:
    a, b, clock = replicas
    b.cooled("p/m", 1.0, 1)
    await b.sync()
    clock.now += 2
    b.recovered("p/m")  # b saw a success...
    clock.now += 0.5
    a.cooled("p/m", 30.0, 1, "429")  # ...and a rate limit came after it, on a
    await a.sync()
    await b.sync()  # b's success is written after a's cooldown, but is older: the cooldown stands
    await a.sync()
    assert a.cooling("p/m") == 30.0 and b.cooling("p/m") == 30.0


async def test_recovered_is_free_for_healthy_deployments(db: Database) -> None:
    shared = SharedCooldowns(db)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    await shared.sync()
    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    for _ in range(1000):  # what every successful request does
        shared.recovered("p/m")
        assert shared.cooling("p/m") == 0.0
    assert statements == []  # no database work on the request path
    await shared.sync()
    assert not any("DELETE FROM cooldowns WHERE cooldowns.ref" in s for s in statements)  # nothing was noted


async def test_background_sync_and_close(backend: Backend) -> None:
    first, second = await open_database(backend.url), await open_database(backend.url)
    a, b = SharedCooldowns(first, interval=0.05), SharedCooldowns(second, interval=0.05)
    try:
        await a.start()
        await b.start()
        a.cooled("p/m", 30.0, 1, "x")
        for _ in range(100):
            if b.cooling("p/m") > 0:
                break
            await asyncio.sleep(0.02)
        assert 29 < b.cooling("p/m") <= 30
        await b.close()
        b.cooled("q/m", 30.0, 1)  # noted after its sync stopped: written by close()
        await b.close()
        assert backend.count("cooldowns", "ref = 'q/m'") == 1
    finally:
        await a.close()
        await first.close()
        await second.close()


async def test_database_trouble_keeps_the_notes(db: Database, backend: Backend) -> None:
    shared = SharedCooldowns(db)
    await shared.sync()
    backend.execute("ALTER TABLE cooldowns RENAME TO cooldowns_away")
    shared.cooled("p/m", 30.0, 1)
    assert not await shared.sync()
    assert shared.cooling("p/m") > 0  # the replica itself still honours it
    backend.execute("ALTER TABLE cooldowns_away RENAME TO cooldowns")
    assert await shared.sync()
    assert backend.count("cooldowns") == 1


async def test_old_rows_are_forgotten(db: Database, backend: Backend) -> None:
    clock = Clock()
    shared = SharedCooldowns(db, clock=clock, forget_after=3600)
    shared.cooled("gone/model", 10.0, 4)
    await shared.sync()
    clock.now += 3600 + 11
    await shared.sync()
    assert backend.count("cooldowns") == 0 and shared.level("gone/model") == 0


async def test_many_replicas_at_once(backend: Backend) -> None:
    # Concurrent upserts of one row from many connections: none fails, the largest values win.
    databases = [await open_database(backend.url) for _ in range(6)]
    try:
        views = [SharedCooldowns(d) for d in databases]
        for i, view in enumerate(views):
            view.cooled("p/m", 10.0 + i, i)
        assert all(await asyncio.gather(*(v.sync() for v in views)))
        await views[0].sync()
        assert views[0].level("p/m") == 5 and 14 < views[0].cooling("p/m") <= 15
    finally:
        for d in databases:
            await d.close()

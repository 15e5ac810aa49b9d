"""Login throttling in the database (SQLite and PostgreSQL): two processes on one database count the same failures,
a flood of other addresses leaves a victim's count alone, a success forgets only its own address, windows end and
their rows are pruned."""

from __future__ import annotations

import time

from minigate.gateway.storage import Database, LoginThrottle
from tests.storage.conftest import Backend, Clock


async def test_failures_add_up_across_processes(db: Database, other: Database) -> None:
    one, two = LoginThrottle(db), LoginThrottle(other)
    for i in range(10):
        assert not await (one if i % 2 else two).blocked(["10.0.0.1"])
        await (one if i % 2 else two).failed(["10.0.0.1"])
    assert await one.blocked(["10.0.0.1"]) and await two.blocked(["10.0.0.1"])
    assert not await two.blocked(["10.0.0.2"])


async def test_a_flood_of_addresses_does_not_reset_a_victim(backend: Backend, db: Database) -> None:
    throttle = LoginThrottle(db)
    for _ in range(9):
        await throttle.failed(["192.0.2.7"])
    started = time.monotonic()
    await throttle.failed([f"198.51.{i // 256}.{i % 256}" for i in range(10_001)])  # more than the old memory cap
    flood = time.monotonic() - started
    assert not await throttle.blocked(["192.0.2.7"])
    await throttle.failed(["192.0.2.7"])  # the tenth
    assert await throttle.blocked(["192.0.2.7"]), f"the flood took {flood:.1f} s"
    assert backend.count("login_failures") == 10_002


async def test_a_success_forgets_only_its_own_address(db: Database) -> None:
    throttle = LoginThrottle(db, limit=3)
    for _ in range(3):
        await throttle.failed(["10.0.0.1", "forwarded"])
    await throttle.failed(["10.0.0.2"])
    assert await throttle.blocked(["10.0.0.1"]) and await throttle.blocked(["10.0.0.9", "forwarded"])
    await throttle.succeeded("10.0.0.1")
    assert not await throttle.blocked(["10.0.0.1"])
    assert await throttle.blocked(["10.0.0.1", "forwarded"])  # the shared counter of forwarded logins stays
    await throttle.failed(["10.0.0.2"])
    await throttle.failed(["10.0.0.2"])
    assert await throttle.blocked(["10.0.0.2"])  # its two earlier failures still count


async def test_a_window_ends_and_its_row_is_pruned(backend: Backend, db: Database) -> None:
    clock = Clock(1_000_000.0)
    throttle = LoginThrottle(db, limit=2, window=600.0, clock=clock)
    await throttle.failed(["10.0.0.1"])
    clock.now += 300
    await throttle.failed(["10.0.0.1"])
    await throttle.failed(["10.0.0.3"])
    assert await throttle.blocked(["10.0.0.1"])
    clock.now += 301  # 601 s after the first failure: the window has ended
    assert not await throttle.blocked(["10.0.0.1"])
    await throttle.failed(["10.0.0.1"])  # counts from one again, in a new window
    assert not await throttle.blocked(["10.0.0.1"])
    await throttle.failed(["10.0.0.1"])
    assert await throttle.blocked(["10.0.0.1"])
    clock.now += 400  # 10.0.0.3's window ended too: the next failure anywhere prunes its row
    await throttle.failed(["10.0.0.4"])
    assert sorted(r[0] for r in backend.rows("SELECT address FROM login_failures")) == ["10.0.0.1", "10.0.0.4"]


async def test_long_addresses_are_cut_to_one_row(backend: Backend, db: Database) -> None:
    throttle = LoginThrottle(db, limit=1)
    await throttle.failed(["x" * 500])
    assert await throttle.blocked(["x" * 200])
    assert backend.count("login_failures") == 1

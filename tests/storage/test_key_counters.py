"""SharedCounters and Limits over a real database (SQLite and PostgreSQL), on a clock the test moves: windows roll
over, counts survive a restart, and leases of calls in flight are shared and expire."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.ops.limits import Limits, Scope, person_scope, reset_text
from minigate.gateway.storage import Database, SharedCounters
from minigate.gateway.storage.key_policy import KeyPolicy
from tests.storage.conftest import Clock

# 2026-12-31 23:59:30 UTC: 30 s before a minute, a day, a month and a year end together.
EVE = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC).timestamp()


def key(key_id: int, policy: KeyPolicy) -> list[Scope]:
    return [Scope(key_id, policy)]


def _code(policy: KeyPolicy, limits: Limits, key_id: int = 1) -> str | None:
    try:
        limits.admit(key(key_id, policy)).release()
    except GatewayError as err:
        return err.code
    return None


async def test_windows_roll_over_at_utc_minute_day_and_month(db: Database) -> None:
    clock = Clock(EVE)
    counters = SharedCounters(db, clock=clock)
    limits = Limits(counters, clock)
    per_minute = KeyPolicy(rpm=1)
    assert _code(per_minute, limits) is None
    assert _code(per_minute, limits) == "rate_limit_exceeded"
    daily = KeyPolicy(daily_tokens=100, monthly_usd=1.0)
    limits.used(2, 100, 0.5)
    assert _code(daily, limits, 2) == "budget_exceeded"
    try:
        limits.admit(key(2, daily))
    except GatewayError as err:
        assert err.headers["retry-after"] == "30"  # the end of the UTC day
    limits.used(3, 1, 1.0)
    assert _code(daily, limits, 3) == "budget_exceeded"  # $1.00 of $1.00
    clock.now = EVE + 30  # 2027-01-01 00:00:00: a new minute, day, month
    assert _code(per_minute, limits) is None
    assert _code(daily, limits, 2) is None
    assert _code(daily, limits, 3) is None


async def test_counts_survive_a_restart_and_add_up_across_replicas(db: Database) -> None:
    clock = Clock(EVE - 3600)
    a, b = SharedCounters(db, clock=clock), SharedCounters(db, clock=clock)
    await a.start()
    await b.start()
    try:
        Limits(a, clock).used(7, 40, 0.25)
        Limits(b, clock).used(7, 60, 0.25)
        assert await a.sync() and await b.sync() and await a.sync()
        policy = KeyPolicy(daily_tokens=100)
        assert _code(policy, Limits(a, clock), 7) == "budget_exceeded"  # 40 here + 60 on b
        assert Limits(a, clock).spent(7)["day_usd"] == 0.5
    finally:
        await a.close()
        await b.close()
    restarted = SharedCounters(db, clock=clock)
    await restarted.start()
    try:
        assert _code(KeyPolicy(daily_tokens=101), Limits(restarted, clock), 7) is None  # 100 of 101
        assert _code(KeyPolicy(daily_tokens=100), Limits(restarted, clock), 7) == "budget_exceeded"
    finally:
        await restarted.close()


async def test_leases_of_calls_in_flight_are_shared_and_expire(db: Database) -> None:
    clock = Clock(EVE - 3600)
    a, b = SharedCounters(db, clock=clock, lease_for=10), SharedCounters(db, clock=clock, lease_for=10)
    policy = KeyPolicy(concurrency=2)
    ticket = Limits(a, clock).admit(key(5, policy))
    assert a.in_flight(5) == 1 and b.in_flight(5) == 0
    assert await a.sync() and await b.sync()
    assert b.in_flight(5) == 1
    held = Limits(b, clock).admit(key(5, policy))  # the second of two slots
    assert _code(policy, Limits(b, clock), 5) == "rate_limit_exceeded"
    held.release()
    held.release()  # idempotent
    clock.now += 11  # a stopped syncing (it died): its lease runs out
    assert await b.sync()
    assert b.in_flight(5) == 0
    ticket.release()
    assert a.in_flight(5) == 0
    assert await a.sync()


@pytest.mark.parametrize(("seconds", "text"), [(0.2, "1s"), (17, "17s"), (60, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")])
def test_reset_header_values(seconds: float, text: str) -> None:
    assert reset_text(seconds) == text


async def test_a_key_and_its_person_are_admitted_together_or_not_at_all(db: Database) -> None:
    clock = Clock(EVE - 3600)
    counters = SharedCounters(db, clock=clock)
    limits = Limits(counters, clock)
    person = person_scope(4)
    both = [
        Scope(9, KeyPolicy(rpm=5, concurrency=3)),
        Scope(person, KeyPolicy(concurrency=1)),
    ]
    first = limits.admit(both)
    assert first.headers["x-ratelimit-limit-requests"] == "5"  # the key's headers
    assert counters.in_flight(9) == 1 and counters.in_flight(person) == 1
    with pytest.raises(GatewayError) as refused:
        limits.admit(both)  # the person's one slot is taken: the key counts nothing either
    assert refused.value.message == "Rate limit reached for your account: 1 requests at once."
    assert counters.in_flight(9) == 1 and limits.spent(9)["minute_requests"] == 1
    first.release()
    assert counters.in_flight(9) == 0 and counters.in_flight(person) == 0
    limits.used(person, 50, 0.2)
    with pytest.raises(GatewayError) as budget:
        limits.admit([Scope(person, KeyPolicy(daily_usd=0.2))])
    assert budget.value.code == "budget_exceeded"
    assert budget.value.message.startswith("Your account has used its daily budget ($0.2).")
    assert limits.spent(9)["day_tokens"] == 0  # a person's count is not a key's

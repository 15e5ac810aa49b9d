"""Cooldowns: after repeated failures, growing backoff, Retry-After, reset on success."""

from __future__ import annotations

from minigate.gateway.config.sections import CooldownConfig
from minigate.gateway.routing.cooldowns import HealthBook
from minigate.providers.base import ProviderError


def fail(book: HealthBook, now: float, **kwargs: object) -> None:
    book.failure("p/m", ProviderError("down", **kwargs), now=now)  # type: ignore[arg-type]


def test_cooldown_starts_after_repeated_failures_and_grows() -> None:
    book = HealthBook(CooldownConfig(failures=3, initial=5, max=12))
    fail(book, 0)
    fail(book, 0)
    assert book.cooling("p/m", now=0) == 0
    fail(book, 0)
    assert book.cooling("p/m", now=0) == 5
    fail(book, 5)  # the retry after the cooldown failed too: back off longer
    assert book.cooling("p/m", now=5) == 10
    fail(book, 15)
    assert book.cooling("p/m", now=15) == 12  # capped at max
    book.success("p/m")
    assert book.cooling("p/m", now=15) == 0
    fail(book, 16)
    assert book.cooling("p/m", now=16) == 0  # counting starts over


def test_retry_after_is_honoured_at_once_and_refusals_do_not_count() -> None:
    book = HealthBook(CooldownConfig(failures=3, initial=5, max=300))
    fail(book, 0, retry_after=2.0)
    assert book.cooling("p/m", now=0) == 2
    other = HealthBook(CooldownConfig(failures=1))
    other.failure("p/m", ProviderError("context too long", cooldown=False), now=0)
    assert other.cooling("p/m", now=0) == 0


def test_one_cause_counts_once() -> None:
    book = HealthBook(CooldownConfig(failures=2, initial=5, max=300))
    for _ in range(8):  # one worker crash fails eight streams
        fail(book, 0, cause="worker #1 died")
    assert book.snapshot()["p/m"]["failures"] == 1 and book.cooling("p/m", now=0) == 0
    fail(book, 1, cause="worker #2 died")  # the next worker crashed too: a second failure
    assert book.cooling("p/m", now=1) == 5
    book.success("p/m")
    fail(book, 2, cause="worker #2 died")  # a late report of a crash already counted
    assert "p/m" not in book.snapshot()


def test_failures_landing_during_a_cooldown_do_not_escalate_it() -> None:
    book = HealthBook(CooldownConfig(failures=3, initial=5, max=300))
    for _ in range(8):  # eight requests in flight when the deployment broke
        fail(book, 0)
    assert book.cooling("p/m", now=0) == 5  # one cooldown, not 5 * 2**5 = 160 s
    fail(book, 4)
    assert book.cooling("p/m", now=4) == 1
    fail(book, 5)  # the first try after the cooldown failed: now it backs off further
    assert book.cooling("p/m", now=5) == 10
    fail(book, 6, retry_after=30.0)  # only the deployment's own word lengthens a cooldown under way
    assert book.cooling("p/m", now=6) == 30

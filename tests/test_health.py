"""Cooldowns: after repeated failures, growing backoff, Retry-After, reset on success."""

from __future__ import annotations

from gateway.config import CooldownConfig
from gateway.health import HealthBook
from providers.base import ProviderError


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

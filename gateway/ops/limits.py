"""A key's (and its person's) policy applied to a call: allowed models, remote or not, rate limits, budgets.

A person's policy applies to everything they do (their web chat and each of their keys), counted under the scope
``-user_id`` (:func:`person_scope`) beside the keys' own ids; a key's own policy applies as well. :meth:`Limits.admit`
runs before any upstream is called and answers 403 or 429 in OpenAI's shape; :meth:`Limits.used` counts an answer's
tokens and cost when its usage row is stored. Counts live in :class:`~minigate.gateway.storage.counters.SharedCounters`
(memory on the request path, the database once a second).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import NamedTuple

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.routing.routes import Route
from minigate.gateway.storage.counters import SharedCounters
from minigate.gateway.storage.key_policy import KeyPolicy

__all__ = ["Limits", "Scope", "Ticket", "allowed_route", "person_scope", "reset_text", "usable"]


def person_scope(user_id: int) -> int:
    """The counters' id of a person's own limits: negative, so it never meets a key's id."""
    return -user_id


_KEY = "This API key"


class Scope(NamedTuple):
    """One policy to admit a call under: its counters' id (a key's, or a :func:`person_scope`) and the policy."""

    id: int
    policy: KeyPolicy

    @property
    def whose(self) -> str:
        """Whose limit it is, as refusals say it."""
        return "Your account" if self.id < 0 else _KEY


def allowed_route(policy: KeyPolicy, route: Route, whose: str = _KEY) -> Route:
    """``route`` as ``policy`` lets it run (only its local deployments for a key without remote); 403 otherwise."""
    chain = route.chain
    names: tuple[str | None, ...] = (route.requested, route.agent, "default" if route.agent == "defaults" else None)
    if route.agent is None and len(chain) == 1:
        names = (*names, chain[0].ref)
    if not policy.allows(names):
        raise GatewayError(
            f"{whose} may not use the model {route.requested!r}.",
            status=403,
            type="permission_error",
            param="model",
            code="model_not_allowed",
        )
    if policy.remote:
        return route
    local = tuple(d for d in chain if route.is_local(d))
    if not local:
        raise GatewayError(
            f"{whose} may use only local models, and {route.requested!r} has no local deployment.",
            status=403,
            type="permission_error",
            param="model",
            code="remote_not_allowed",
        )
    return route if len(local) == len(chain) else replace(route, chain=local, capability_fallback=False)


def usable(policy: KeyPolicy | None, route: Route | None) -> bool:
    """Whether a key with ``policy`` may call ``route`` at all (what ``GET /v1/models`` lists for it)."""
    if route is None or policy is None:
        return route is not None
    try:
        allowed_route(policy, route)
    except GatewayError:
        return False
    return True


def reset_text(seconds: float) -> str:
    """A duration as OpenAI's ``x-ratelimit-reset-*`` headers write it: ``"17s"``, ``"6m0s"``, ``"1h2m3s"``."""
    whole = max(1, math.ceil(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class Ticket:
    """One admitted call: the headers to send, and its concurrency slots until :meth:`release`."""

    __slots__ = ("_counters", "headers", "slots")

    def __init__(self, counters: SharedCounters | None, slots: tuple[int, ...], headers: dict[str, str]) -> None:
        self._counters, self.slots, self.headers = counters, slots, headers

    def release(self) -> None:
        """Give the concurrency slots back (idempotent)."""
        counters, self._counters = self._counters, None
        if counters is not None:
            for scope in self.slots:
                counters.leave(scope)

    def __del__(self) -> None:
        # A call dropped before it was served (its row never stored) must not hold its slot for ever.
        self.release()


class _Periods:
    __slots__ = ("day", "day_end", "minute", "minute_end", "minute_index", "month", "month_end")

    def __init__(self, now: float) -> None:
        self.minute_index = int(now // 60)
        self.minute, self.minute_end = f"m:{self.minute_index}", (self.minute_index + 1) * 60.0
        today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.day, self.day_end = f"d:{today:%Y-%m-%d}", today.timestamp() + 86_400.0
        first = today.replace(day=1)
        following = (
            first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
        )
        self.month, self.month_end = f"M:{first:%Y-%m}", following.timestamp()


class Limits:
    """Rate limits and budgets of every key, over shared counters."""

    def __init__(self, counters: SharedCounters, clock: Callable[[], float] = time.time) -> None:
        """Count in ``counters``; ``clock`` is the wall clock (tests move it)."""
        self.counters = counters
        self._clock = clock
        self._periods = _Periods(clock())

    def _now(self) -> tuple[float, _Periods]:
        now = self._clock()
        periods = self._periods
        if int(now // 60) != periods.minute_index:
            periods = self._periods = _Periods(now)
        return now, periods

    def admit(self, scopes: Sequence[Scope]) -> Ticket:
        """Count one request under every scope's policy (a key's, its person's), or refuse it with a 429
        (``budget_exceeded``, ``rate_limit_exceeded``) counting nothing. A request is admitted on what was counted so
        far, so one request may overshoot a token limit or budget by its own size. The headers are the first scope's
        that has a per-minute limit (the key's before its person's)."""
        now, p = self._now()
        headers: dict[str, str] = {}
        for scope in scopes:
            found = self._check(scope, now, p)
            if not headers:
                headers = found
        slots = tuple(s.id for s in scopes if s.policy.concurrency is not None)
        for scope in scopes:
            self.counters.add((scope.id, p.minute), p.minute_end, 1, 0, 0.0)
        for slot in slots:
            self.counters.enter(slot)
        return Ticket(self.counters if slots else None, slots, headers)

    def _check(self, scope: Scope, now: float, p: _Periods) -> dict[str, str]:
        """The rate-limit headers of ``scope`` for this request; raises the 429 that refuses it."""
        key_id, policy, whose = scope.id, scope.policy, scope.whose
        view = self.counters.view
        if policy.daily_tokens is not None or policy.daily_usd is not None:
            seen = view.get((key_id, p.day))
            self._budget(seen, policy.daily_tokens, policy.daily_usd, "daily", p.day_end - now, whose)
        if policy.monthly_tokens is not None or policy.monthly_usd is not None:
            seen = view.get((key_id, p.month))
            self._budget(seen, policy.monthly_tokens, policy.monthly_usd, "monthly", p.month_end - now, whose)
        minute = view.get((key_id, p.minute))
        requests, tokens = (int(minute[0]), int(minute[1])) if minute else (0, 0)
        headers: dict[str, str] = {}
        reset = reset_text(p.minute_end - now) if policy.rpm is not None or policy.tpm is not None else ""
        if policy.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(policy.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, policy.rpm - requests - 1))
            headers["x-ratelimit-reset-requests"] = reset
        if policy.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(policy.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, policy.tpm - tokens))
            headers["x-ratelimit-reset-tokens"] = reset
        of = " for your account" if key_id < 0 else ""
        if policy.rpm is not None and requests >= policy.rpm:
            headers["x-ratelimit-remaining-requests"] = "0"
            raise _limited(f"Rate limit reached{of}: {policy.rpm} requests per minute.", p.minute_end - now, headers)
        if policy.tpm is not None and tokens >= policy.tpm:
            raise _limited(
                f"Rate limit reached{of}: {policy.tpm} tokens per minute.", p.minute_end - now, headers, "tokens"
            )
        if policy.concurrency is not None and self.counters.in_flight(key_id) >= policy.concurrency:
            raise _limited(f"Rate limit reached{of}: {policy.concurrency} requests at once.", 1.0, headers)
        return headers

    @staticmethod
    def _budget(
        seen: list[float] | None, tokens: int | None, usd: float | None, period: str, wait: float, whose: str
    ) -> None:
        if seen is None:
            return
        if tokens is not None and seen[1] >= tokens:
            raise _budget(f"{whose} has used its {period} token budget ({tokens} tokens).", wait)
        if usd is not None and seen[2] >= usd:
            raise _budget(f"{whose} has used its {period} budget (${usd:g}).", wait)

    def used(self, key_id: int, tokens: int, cost: float | None) -> None:
        """Count an answer's ``tokens`` and ``cost`` (US dollars; None: unpriced) against ``key_id`` (a key's id or
        a :func:`person_scope`)."""
        if not tokens and not cost:
            return
        _, p = self._now()
        dollars = cost or 0.0
        add = self.counters.add
        add((key_id, p.minute), p.minute_end, 0, tokens, dollars)
        add((key_id, p.day), p.day_end, 0, tokens, dollars)
        add((key_id, p.month), p.month_end, 0, tokens, dollars)

    def spent(self, key_id: int) -> dict[str, float]:
        """What ``key_id`` used in the current minute, day and month, as this replica knows it."""
        _, p = self._now()
        view = self.counters.view
        out: dict[str, float] = {}
        for name, period in (("minute", p.minute), ("day", p.day), ("month", p.month)):
            seen = view.get((key_id, period)) or [0, 0, 0.0]
            out.update({f"{name}_requests": seen[0], f"{name}_tokens": seen[1], f"{name}_usd": round(seen[2], 6)})
        return out


def _limited(message: str, wait: float, headers: dict[str, str], kind: str = "requests") -> GatewayError:
    return GatewayError(
        message,
        status=429,
        type=kind,
        code="rate_limit_exceeded",
        headers={**headers, "retry-after": str(max(1, math.ceil(wait)))},
    )


def _budget(message: str, wait: float) -> GatewayError:
    return GatewayError(
        message + " It is stopped until the period rolls over or an admin raises the budget.",
        status=429,
        type="insufficient_quota",
        code="budget_exceeded",
        headers={"retry-after": str(max(1, math.ceil(wait)))},
    )

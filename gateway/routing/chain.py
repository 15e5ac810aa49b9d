"""The fallback chain: one loop over an ordered list of deployments, collecting each failure.

Cooling deployments are skipped; a failure with ``fallback`` set moves on, any other comes back at once. One
deadline covers the loop; :func:`chain_error` turns the hops into the one error the client sees. A group's members
are put in order for each request first (:mod:`minigate.gateway.routing.groups`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from minigate.gateway.core.errors import ChainFailed, GatewayError
from minigate.gateway.routing.cooldowns import HealthBook
from minigate.gateway.routing.groups import expand
from minigate.gateway.routing.routes import Deployment, Route
from minigate.providers.base import Provider, ProviderError, UpstreamUnavailable
from minigate.providers.limits import cut

__all__ = ["ChainExhausted", "Hop", "cause_of", "chain_error", "run_chain"]

T = TypeVar("T")

# A hop's message as shown and stored is cut here whatever its provider: a remote provider cuts upstream errors to
# its own ``limits.max_error_message_chars`` first, but a plugin's provider may pass on anything.
HOP_MESSAGE_CHARS = 4000

# Error codes the gateway and its built-in providers set themselves: safe as label values. An upstream's own
# code is free text from a remote service, so it is reported as its HTTP status instead.
_OWN_CODES = frozenset(
    {
        "upstream_unavailable",
        "upstream_timeout",
        "upstream_truncated",
        "upstream_malformed",
        "upstream_too_large",
        "worker_died",
        "worker_dead",
        "queue_full",
        "context_length_exceeded",
        "unsupported_content",
        "unsupported_parameter",
        "model_not_found",
        "unsupported_endpoint",
        "memory_budget",
        "model_load_failed",
        "engine_error",
        "timeout",
        "rate_limit_exceeded",
        "invalid_api_key",
    }
)


def cause_of(error: ProviderError | None) -> tuple[str, str]:
    """``(error class, code)`` labels for a failed or skipped deployment."""
    if error is None:
        return "Cooling", "cooling_down"
    kind = type(error).__name__ if type(error).__module__ == "minigate.providers.base" else "ProviderError"
    if error.code in _OWN_CODES:
        return kind, str(error.code)
    if isinstance(error, UpstreamUnavailable):
        return kind, "upstream_unavailable"
    return kind, f"http_{error.status}" if 100 <= error.status < 600 else "other"


@dataclass(slots=True)
class Hop:
    """A deployment that did not answer: its error, or how long it still cooled down when skipped."""

    deployment: Deployment
    error: ProviderError | None = None
    cooling: float = 0.0

    def describe(self) -> str:
        """One line for error messages and logs."""
        if self.error is None:
            return f"{self.deployment.ref}: cooling down ({math.ceil(self.cooling)} s left)"
        status = (
            f"HTTP {self.error.status}: " if self.error.status and self.error.code != "upstream_unavailable" else ""
        )
        return f"{self.deployment.ref}: {status}{cut(self.error.message, HOP_MESSAGE_CHARS)}"

    def record(self) -> dict[str, Any]:
        """The hop as stored in the usage row; ``class`` and ``code`` are the labels /metrics counts it under."""
        kind, code = cause_of(self.error)
        return {
            "provider": self.deployment.provider,
            "model": self.deployment.model,
            "error": "cooling down" if self.error is None else cut(self.error.message, HOP_MESSAGE_CHARS),
            "status": None if self.error is None else self.error.status,
            "class": kind,
            "code": code,
        }


class ChainExhausted(Exception):
    """No deployment answered: ``error`` is what the client sees, ``hops`` what happened on the way."""

    def __init__(self, error: GatewayError, hops: list[Hop]) -> None:
        super().__init__(error.message)
        self.error = error
        self.hops = hops


async def run_chain(
    route: Route,
    providers: dict[str, Provider],
    health: HealthBook,
    deadline: float,
    attempt: Callable[[Provider, Deployment], Awaitable[T]],
    hops: list[Hop] | None = None,
    *,
    held: bool = False,
) -> tuple[Deployment, T, list[Hop]]:
    """Try each deployment of ``route`` in order until ``attempt`` succeeds; else raise :class:`ChainExhausted`.

    A group's members come in the order its strategy chooses for this request. Failures are appended to ``hops``
    (a new list when None) as they happen, so a caller whose wait is cancelled still knows which deployments failed
    before, and stores them. Each attempt counts as outstanding on its deployment (``health.load``) until it ends;
    ``held``: the answer is a stream, whose deployment stays busy until the caller calls ``health.load.done``.
    """
    hops = [] if hops is None else hops
    refused: ProviderError | None = None  # a capability refusal: the request may not leave the machine for it
    load = health.load
    chain = route.chain if not route.grouped else expand(route.chain, load, health.cooling, held)
    for deployment in chain:
        if refused is not None and not route.capability_fallback and not route.is_local(deployment):
            raise ChainExhausted(_own_error(refused), hops)
        wait = health.cooling(deployment.ref)
        if wait > 0:
            hops.append(Hop(deployment, cooling=wait))
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        provider = providers.get(deployment.provider)
        if provider is None:  # the config check makes this unreachable for agents; kept for direct refs
            hops.append(Hop(deployment, UpstreamUnavailable(f"no provider named {deployment.provider!r}")))
            continue
        load.sent(deployment.ref)
        sent, answered = time.monotonic(), False
        try:
            async with asyncio.timeout(remaining):
                result = await attempt(provider, deployment)
            answered = True
        except ProviderError as err:
            hops.append(Hop(deployment, err))
            health.failure(deployment.ref, err)
            if not err.fallback:
                raise ChainExhausted(chain_error(route, hops), hops) from None
            if err.capability and refused is None:
                refused = err
            continue
        except TimeoutError:
            late = UpstreamUnavailable(f"{deployment.ref}: the request's deadline passed", code="upstream_timeout")
            hops.append(Hop(deployment, late))
            health.failure(deployment.ref, late)
            break
        finally:
            if not (answered and held):  # however the attempt ended; a stream is ended by its caller
                load.done(deployment.ref)
        load.answered(deployment.ref, time.monotonic() - sent, held)
        health.success(deployment.ref)
        return deployment, result, hops
    if refused is not None and all(h.error is not None and h.error.capability for h in hops):
        raise ChainExhausted(_own_error(refused), hops)  # every deployment refused: the first one's 400 says why
    raise ChainExhausted(chain_error(route, hops), hops)


def _own_error(err: ProviderError) -> GatewayError:
    """The client's error as one deployment gave it."""
    return GatewayError(
        cut(err.message, HOP_MESSAGE_CHARS), status=err.status, type=err.type, param=err.param, code=err.code
    )


def chain_error(route: Route, hops: list[Hop]) -> GatewayError:
    """The one error a client sees when no deployment of ``route`` answered."""
    tried = [h.error for h in hops if h.error is not None]
    last = tried[-1] if tried else None
    if last is not None and not last.fallback:
        return _own_error(last)  # the client's own error: pass the upstream's verdict through as it was
    summary = "; ".join(h.describe() for h in hops) or "the chain is empty"
    waits = [h.cooling for h in hops if h.error is None] + [e.retry_after for e in tried if e.retry_after]
    headers = {"retry-after": str(max(1, math.ceil(min(waits))))} if waits else {}
    if not tried:
        return ChainFailed(
            f"Every deployment for {route.requested!r} is cooling down after failures: {summary}",
            status=503,
            type="server_error",
            code="all_deployments_cooling",
            headers=headers,
        )
    assert last is not None
    if all(e.status == 429 for e in tried):
        return ChainFailed(
            f"Rate limited upstream for {route.requested!r}: {summary}",
            status=429,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if all(400 <= e.status < 500 and not e.cooldown for e in tried):
        # Every provider refused the request itself (context too long, model unknown to all of them).
        return GatewayError(
            f"No deployment for {route.requested!r} accepted the request: {summary}",
            status=last.status,
            type=last.type,
            param=last.param,
            code=last.code,
        )
    if last.code == "upstream_too_large":
        return ChainFailed(
            f"No deployment for {route.requested!r} could answer: {summary}",
            status=502,
            type="upstream_error",
            code="upstream_too_large",
            headers=headers,
        )
    if last.code == "upstream_timeout":
        return ChainFailed(
            f"The request for {route.requested!r} timed out: {summary}",
            status=504,
            type="timeout_error",
            code="upstream_timeout",
            headers=headers,
        )
    return ChainFailed(
        f"No deployment for {route.requested!r} could answer: {summary}",
        status=502,
        type="upstream_error",
        code="all_deployments_failed",
        headers=headers,
    )

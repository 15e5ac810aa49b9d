"""Deployment health: cooldowns with growing backoff, so a failing deployment is skipped, then retried.

A deployment cools down when it fails ``failures`` times in a row, or at once when it says how long to wait
(``Retry-After``). Each cooldown that ends in another failure doubles the next one, up to ``max``; one success
resets everything, so traffic returns to the primary on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.config import CooldownConfig
from providers.base import ProviderError

__all__ = ["HealthBook"]


@dataclass(slots=True)
class _State:
    consecutive: int = 0
    level: int = 0
    until: float = 0.0
    last_error: str | None = None


class HealthBook:
    """Per-deployment failure counts and cooldowns, keyed by ``provider/model``."""

    def __init__(self, config: CooldownConfig) -> None:
        self._config = config
        self._states: dict[str, _State] = {}

    def cooling(self, ref: str, now: float | None = None) -> float:
        """Seconds the deployment still cools down (0.0 when it may be tried)."""
        state = self._states.get(ref)
        if state is None:
            return 0.0
        return max(0.0, state.until - (time.monotonic() if now is None else now))

    def success(self, ref: str) -> None:
        """The deployment answered: forget its failures."""
        if ref in self._states:
            del self._states[ref]

    def failure(self, ref: str, error: ProviderError, now: float | None = None) -> None:
        """Count a failure; start (or lengthen) a cooldown when it is due."""
        if not error.cooldown:
            return
        now = time.monotonic() if now is None else now
        state = self._states.setdefault(ref, _State())
        state.consecutive += 1
        state.last_error = error.message
        cfg = self._config
        # A failure right after a cooldown ended means the deployment is still down: back off further.
        after_cooldown = state.level > 0 and state.until <= now
        if state.consecutive >= cfg.failures or after_cooldown:
            state.until = now + min(cfg.initial * (2**state.level), cfg.max)
            state.level += 1
        if error.retry_after is not None:
            state.until = max(state.until, now + min(error.retry_after, cfg.max))

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Current failure state of every deployment that has failed since its last success."""
        now = time.monotonic()
        return {
            ref: {
                "failures": s.consecutive,
                "cooldown_s": round(max(0.0, s.until - now), 3),
                "last_error": s.last_error,
            }
            for ref, s in self._states.items()
        }

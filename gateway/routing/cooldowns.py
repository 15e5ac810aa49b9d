"""Deployment cooldowns with growing backoff, so a failing deployment is skipped, then retried.

One success resets the backoff, and one fault counts once (docs/architecture.md, "Cooldowns").
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from minigate.gateway.config.sections import CooldownConfig
from minigate.gateway.routing.groups import LoadBook
from minigate.gateway.storage import SharedCooldowns
from minigate.providers.base import ProviderError

__all__ = ["HealthBook"]

_CAUSES_KEPT = 1024  # causes remembered (oldest forgotten first): far more than faults in flight at once


@dataclass(slots=True)
class _State:
    consecutive: int = 0
    level: int = 0
    until: float = 0.0
    last_error: str | None = None


class HealthBook:
    """Per-deployment failure counts and cooldowns, keyed by ``provider/model``; ``load`` keeps what groups balance
    on (requests outstanding, latency)."""

    def __init__(
        self, config: CooldownConfig, shared: SharedCooldowns | None = None, load: LoadBook | None = None
    ) -> None:
        """``shared``: cooldowns of the other replicas of the database, honoured here and told ours."""
        self.load = LoadBook() if load is None else load
        self._config = config
        self._states: dict[str, _State] = {}
        self._shared = shared
        self._causes: OrderedDict[tuple[str, str], None] = OrderedDict()  # (ref, cause) already counted

    def cooling(self, ref: str, now: float | None = None) -> float:
        """Seconds the deployment still cools down (0.0 when it may be tried), here or on another replica."""
        state = self._states.get(ref)
        local = 0.0 if state is None else max(0.0, state.until - (time.monotonic() if now is None else now))
        return local if self._shared is None else max(local, self._shared.cooling(ref))

    def success(self, ref: str) -> None:
        """The deployment answered: forget its failures."""
        if ref in self._states:
            del self._states[ref]
        if self._shared is not None:
            self._shared.recovered(ref)

    def failure(self, ref: str, error: ProviderError, now: float | None = None) -> None:
        """Count a failure (once per cause); start a cooldown when it is due."""
        if not error.cooldown:
            return
        if error.cause is not None:
            if (ref, error.cause) in self._causes:
                return  # the same fault, seen through another of the requests it failed
            self._causes[ref, error.cause] = None
            if len(self._causes) > _CAUSES_KEPT:
                self._causes.popitem(last=False)
        now = time.monotonic() if now is None else now
        state = self._states.setdefault(ref, _State())
        state.last_error = error.message
        if self._shared is not None:  # backing off continues from the other replicas' cooldowns
            state.level = max(state.level, self._shared.level(ref))
        before = state.until
        state.consecutive += 1
        cfg = self._config
        # A failure right after a cooldown ended means the deployment is still down: back off further. One
        # during the cooldown was already in flight when the deployment broke: it tells nothing new.
        cooling = state.until > now
        after_cooldown = state.level > 0 and not cooling
        if not cooling and (state.consecutive >= cfg.failures or after_cooldown):
            state.until = now + min(cfg.initial * (2**state.level), cfg.max)
            state.level += 1
        if error.retry_after is not None:
            state.until = max(state.until, now + min(error.retry_after, cfg.max))
        if self._shared is not None and state.until > before:
            self._shared.cooled(ref, state.until - now, state.level, error.message)

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Current failure state of every deployment that has failed since its last success (on any replica)."""
        now = time.monotonic()
        view: dict[str, dict[str, object]] = {}
        for ref, state in self._states.items():
            view[ref] = {
                "failures": state.consecutive,
                "cooldown_s": round(max(0.0, state.until - now), 3),
                "last_error": state.last_error,
            }
        if self._shared is not None:
            for ref in self._shared.snapshot():
                shared = self._shared.get(ref)
                assert shared is not None
                mine = view.setdefault(ref, {"failures": 0, "cooldown_s": 0.0, "last_error": shared.last_error})
                mine["cooldown_s"] = round(max(float(str(mine["cooldown_s"])), self._shared.cooling(ref)), 3)
        return view

"""Model groups: deployments serving the same model, ordered per request by a balancing strategy.

A group is expanded into an ordered list of its members when a request starts (:func:`expand`); the fallback loop
then runs over that list. :class:`LoadBook` keeps what the strategies read: requests outstanding and recent latency.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from minigate.gateway.config.sections import STRATEGIES

__all__ = ["EXPLORE", "STRATEGIES", "Group", "LoadBook", "expand"]

EXPLORE = 0.05  # share of requests the latency strategy sends to another member first, so it is measured again
_ALPHA = 0.3  # weight of the newest latency in the moving average


class LoadBook:
    """Per deployment (``provider/model``): requests outstanding, and a moving average of latency.

    Latency is kept apart for streams (time to the first content chunk) and whole answers (total time). ``rng`` is
    what the strategies draw from; a test may seed it.
    """

    __slots__ = ("_latency", "busy", "rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        self.busy: dict[str, int] = {}
        self._latency: dict[tuple[str, bool], float] = {}
        self.rng = rng or random.Random()

    def sent(self, ref: str) -> None:
        """A request left for ``ref``."""
        self.busy[ref] = self.busy.get(ref, 0) + 1

    def done(self, ref: str) -> None:
        """A request to ``ref`` ended, however it ended."""
        left = self.busy.get(ref, 0) - 1
        if left > 0:
            self.busy[ref] = left
        else:
            self.busy.pop(ref, None)

    def answered(self, ref: str, seconds: float, stream: bool) -> None:
        """``ref`` answered after ``seconds`` (to the first content chunk when ``stream``)."""
        key = (ref, stream)
        last = self._latency.get(key)
        self._latency[key] = seconds if last is None else last + _ALPHA * (seconds - last)

    def latency(self, ref: str, stream: bool) -> float | None:
        """The moving average of ``ref``'s latency in seconds, None before its first answer."""
        return self._latency.get((ref, stream))


@dataclass(frozen=True, eq=False)
class Group:
    """One group of a chain: its strategy and members' weights (``ref`` -> weight, 1 when not given)."""

    strategy: str
    weights: dict[str, float] = field(default_factory=dict)

    def order(self, refs: Sequence[str], load: LoadBook, stream: bool) -> list[int]:
        """Indexes of ``refs`` in the order to try them."""
        rng, n = load.rng, len(refs)
        if self.strategy == "weighted":  # a weighted draw without replacement (Efraimidis-Spirakis keys)
            keys = [rng.random() ** (1.0 / self.weights.get(ref, 1.0)) for ref in refs]
            return sorted(range(n), key=lambda i: -keys[i])
        if self.strategy == "latency":
            # Unmeasured members first (they are measured then); now and then another member goes first.
            seen = [load.latency(ref, stream) for ref in refs]
            ranked = sorted(range(n), key=lambda i: (seen[i] is not None, seen[i] or 0.0, rng.random()))
            if n > 1 and rng.random() < EXPLORE:
                ranked.insert(0, ranked.pop(rng.randrange(1, n)))
            return ranked
        busy = load.busy  # least_busy: fewest outstanding requests, ties drawn at random
        return sorted(range(n), key=lambda i: (busy.get(refs[i], 0), rng.random()))


class _Entry(Protocol):
    @property
    def ref(self) -> str: ...

    @property
    def group(self) -> Group | None: ...


E = TypeVar("E", bound=_Entry)


def expand(chain: Sequence[E], load: LoadBook, cooling: Callable[[str], float], stream: bool) -> list[E]:
    """``chain`` with each group's members (a run of entries sharing one :class:`Group`) in the order its strategy
    chooses for this request; members cooling down go last, where the chain's loop skips them."""
    out: list[E] = []
    i, n = 0, len(chain)
    while i < n:
        group = chain[i].group
        if group is None:
            out.append(chain[i])
            i += 1
            continue
        j = i + 1
        while j < n and chain[j].group is group:
            j += 1
        members = chain[i:j]
        waits = [cooling(m.ref) for m in members]
        live = [m for m, wait in zip(members, waits, strict=True) if wait <= 0]
        picked = group.order([m.ref for m in live], load, stream)
        out.extend(live[k] for k in picked)
        out.extend(m for m, wait in zip(members, waits, strict=True) if wait > 0)
        i = j
    return out

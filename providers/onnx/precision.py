"""Which model folder answers a reference: ``name``, ``name@int8`` or ``name@auto`` (the smaller precision under
load, the better one when idle). The choice is made once per request, before it reaches a worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import minigate.providers.onnx.store as store
from minigate.providers.base import ProviderError

__all__ = ["Choice", "PrecisionRouter"]


@dataclass(frozen=True, slots=True)
class Choice:
    """The folder (worker) that answers a request, its precision (None: unknown) and whether ``auto`` chose it."""

    folder: str
    precision: str | None
    auto: bool = False


class PrecisionRouter:
    """Resolves model references to folders of ``models_dir``.

    ``default`` applies to a reference without ``@``: None serves the plain folder, ``"auto"`` chooses, a
    precision serves that one where the model has it. Under ``auto`` a model is *under load* when its requests
    in flight (accepted by any of its precisions' workers and not yet finished or closed) number ``busy_at`` or
    more: then the smallest precision answers, else the largest. What each model holds is read from disk at most
    every ``ttl`` seconds (:meth:`forget` drops it at once, after a pull, import or delete).
    """

    def __init__(self, models_dir: Path, default: str | None = None, busy_at: int = 2, ttl: float = 2.0) -> None:
        self.models_dir = models_dir
        self.default = default
        self.busy_at = busy_at
        self.ttl = ttl
        self._seen: dict[str, tuple[float, dict[str, str]]] = {}

    def forget(self) -> None:
        """Read every model's precisions from disk again on its next request."""
        self._seen.clear()

    def variants(self, base: str) -> dict[str, str]:
        """Precision -> folder for model ``base``, smallest first (``store.variants``, cached for ``ttl``)."""
        now = time.monotonic()
        seen = self._seen.get(base)
        if seen is None or now - seen[0] > self.ttl:
            seen = (now, store.variants(self.models_dir, base))
            self._seen[base] = seen
        return seen[1]

    def choose(self, model: str, inflight: Callable[[str], int]) -> Choice:
        """The folder for ``model``; ``inflight(folder)`` counts the requests in flight on a folder's worker.

        Raises a 400 for a malformed reference and a 404 naming the precisions there are for one not imported.
        """
        try:
            base, precision = store.split_ref(model)
        except store.ModelStoreError as exc:
            raise ProviderError(
                str(exc), status=400, type="invalid_request_error", code="invalid_model", cooldown=False
            ) from exc
        found = self.variants(base)
        if not found:
            raise ProviderError(
                f"model {base!r} not found in the local models folder",
                status=404,
                type="invalid_request_error",
                code="model_not_found",
                cooldown=False,
            )
        if precision is None and self.default is not None and (self.default == "auto" or self.default in found):
            precision = self.default
        if precision is None:
            if base in found.values():
                plain = next(p for p, f in found.items() if f == base)
                return Choice(base, None if plain == "default" else plain)
            best = list(found)[-1]
            return Choice(found[best], best)
        if precision == "auto":
            known = [p for p in found if p != "default"] or list(found)
            busy = sum(inflight(folder) for folder in found.values())
            pick = known[0] if busy >= self.busy_at else known[-1]
            return Choice(found[pick], None if pick == "default" else pick, auto=True)
        if precision not in found:
            there = ", ".join(f"{p} ({f})" for p, f in found.items()) or "none"
            raise ProviderError(
                f"model {base!r} has no {precision} import; it has: {there} "
                f"(pull or import it with --precision {precision})",
                status=404,
                type="invalid_request_error",
                code="precision_not_found",
                cooldown=False,
            )
        return Choice(found[precision], precision)

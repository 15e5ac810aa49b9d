"""What a request cost: prices per million input and output tokens, from ``models.prices`` and the shipped table.

``models.prices`` keys are ``provider/model``, a model name, or fnmatch patterns of either; its entries come
first, then the shipped list prices (``prices.json``, which says when they were taken), which apply to remote
providers only: a local model is free unless ``models.prices`` prices it.
"""

from __future__ import annotations

import fnmatch
import json
from functools import cache
from importlib import resources
from typing import Any, Literal

__all__ = ["PriceSource", "PriceTable", "check_prices", "shipped_prices"]

Price = tuple[float, float]  # US dollars per million input tokens, per million output tokens
PriceSource = Literal["config", "shipped", "local", "none"]  # where a price comes from (PriceTable.explain)
_MAX_CACHED = 4096


@cache
def shipped_prices() -> tuple[str, dict[str, Price]]:
    """``(when they were taken, {pattern: (input, output)})`` from the package's ``prices.json``."""
    data = json.loads(resources.files(__package__).joinpath("prices.json").read_text("utf-8"))
    return str(data["taken"]), {k: (float(v[0]), float(v[1])) for k, v in data["prices"].items()}


def check_prices(raw: dict[str, Any], issues: list[tuple[str, str]]) -> dict[str, Price]:
    """``models.prices`` as ``{key: (input, output)}``; each wrong entry is appended to ``issues``."""
    out: dict[str, Price] = {}
    for key, entry in raw.items():
        path = f"models.prices.{key}"
        if not key or len(key) > 300:
            issues.append((path, "must be a provider/model, a model name or a pattern of either (1-300 characters)"))
            continue
        values = [entry.get("input"), entry.get("output")] if isinstance(entry, dict) else None
        extra = set(entry) - {"input", "output"} if isinstance(entry, dict) else set()
        if values is None or extra or not all(_usd(v) for v in values):
            issues.append((path, 'must be {"input": USD, "output": USD} per million tokens, each 0 or more'))
            continue
        out[key] = (float(entry["input"]), float(entry["output"]))
    return out


def _usd(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e6


def _pattern(key: str) -> bool:
    return any(ch in key for ch in "*?[")


class PriceTable:
    """Prices for every deployment; :meth:`cost` is what a request cost (None: unpriced)."""

    def __init__(self, configured: dict[str, Price], local: frozenset[str]) -> None:
        """``configured`` from ``models.prices``; ``local`` names the providers that run on this machine."""
        self.configured = configured
        self.local = local
        self._shipped = shipped_prices()[1]
        self._found: dict[tuple[str, str], Price | None] = {}

    def price(self, provider: str, model: str) -> Price | None:
        """``(input, output)`` per million tokens for ``provider/model``, or None when nothing prices it."""
        found = self._found.get((provider, model), False)
        if found is not False:
            return found  # type: ignore[return-value]
        price = self._lookup(provider, model)
        if len(self._found) >= _MAX_CACHED:
            self._found.clear()
        self._found[(provider, model)] = price
        return price

    def _lookup(self, provider: str, model: str) -> Price | None:
        return self.explain(provider, model)[0]

    def explain(self, provider: str, model: str) -> tuple[Price | None, PriceSource, str | None]:
        """``(price, source, entry)`` for ``provider/model``: ``source`` is ``"config"`` (``entry``: the
        ``models.prices`` key that matched), ``"shipped"`` (``entry``: the ``prices.json`` pattern), ``"local"`` (free,
        unpriced by the config) or ``"none"`` (nothing prices it)."""
        ref = f"{provider}/{model}"
        configured = self.configured
        for name in (ref, model):  # exact names first, then patterns in the order written
            if name in configured:
                return configured[name], "config", name
        for key, price in configured.items():
            if _pattern(key) and (fnmatch.fnmatchcase(ref, key) or fnmatch.fnmatchcase(model, key)):
                return price, "config", key
        if provider in self.local:
            return (0.0, 0.0), "local", None
        base = model.rsplit("/", 1)[-1]  # "openai/gpt-4o" through a router upstream is gpt-4o
        for key, price in self._shipped.items():
            if fnmatch.fnmatchcase(base, key):
                return price, "shipped", key
        return None, "none", None

    def cost(self, provider: str, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """US dollars for one answer's tokens (None: unpriced)."""
        price = self.price(provider, model)
        if price is None:
            return None
        return ((prompt_tokens or 0) * price[0] + (completion_tokens or 0) * price[1]) / 1_000_000

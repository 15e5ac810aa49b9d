"""The keys page's policy form: what an admin types (models, local only, limits, budgets, expiry), checked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from minigate.gateway.storage.key_policy import KeyPolicy, parse_expiry, policy_from

__all__ = ["LIMIT_FIELDS", "policy_form"]

# (form field, what it limits) in the order the form shows them; empty means no limit.
LIMIT_FIELDS = (
    ("rpm", "requests / minute"),
    ("tpm", "tokens / minute"),
    ("concurrency", "at once"),
    ("daily_tokens", "tokens / day"),
    ("monthly_tokens", "tokens / month"),
    ("daily_usd", "USD / day"),
    ("monthly_usd", "USD / month"),
)


def _number(name: str, text: str) -> int | float:
    try:
        return float(text) if name.endswith("_usd") else int(text)
    except ValueError:
        raise ValueError(f"invalid policy: {name} must be a number, not {text[:40]!r}") from None


def policy_form(form: Any) -> tuple[KeyPolicy | None, datetime | None]:
    """The policy and expiry a submitted form sets; ValueError (its message fit to show) when a field is wrong."""
    raw: dict[str, Any] = {}
    models = str(form.get("models") or "").strip()
    if models:
        raw["models"] = [m.strip() for m in models.split(",") if m.strip()]
    if form.get("local_only") == "on":
        raw["remote"] = False
    for name, _ in LIMIT_FIELDS:
        text = str(form.get(name) or "").strip()
        if text:
            raw[name] = _number(name, text)
    return policy_from(raw), parse_expiry(str(form.get("expires") or "")[:40])

"""A key's policy: which models it may ask for, whether it may reach remote providers, its rate limits and budgets.

Stored as JSON in ``api_keys.policy`` (None: no limits), beside ``api_keys.expires_at``; enforced by
:mod:`minigate.gateway.ops.limits`.
"""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast

import msgspec
from sqlalchemy import Table, update

from minigate.gateway.storage.db import Database
from minigate.gateway.storage.tables import ApiKeyRow

__all__ = ["KeyPolicy", "decode_policy", "encode_policy", "parse_expiry", "policy_from", "store_policy"]

_KEYS = cast(Table, ApiKeyRow.__table__)
_MAX_PATTERNS = 100


class KeyPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What a key may do. Every limit is optional (None: no limit); budgets are per UTC day and calendar month."""

    models: tuple[str, ...] | None = None  # names or fnmatch patterns of agents, aliases, provider/model; None: any
    remote: bool = True  # False: only the local deployments of a chain are tried
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute
    concurrency: int | None = None  # calls in flight at once
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None

    def allows(self, names: tuple[str | None, ...]) -> bool:
        """True when no model list is set or one of ``names`` matches one of its names or patterns."""
        if self.models is None:
            return True
        models = self.models
        return any(n is not None and (n in models or _matches(n, models)) for n in names)

    @property
    def limited(self) -> bool:
        """True when a rate limit or budget is set (not only models or remote)."""
        return any(
            v is not None
            for v in (
                self.rpm,
                self.tpm,
                self.concurrency,
                self.daily_tokens,
                self.monthly_tokens,
                self.daily_usd,
                self.monthly_usd,
            )
        )


@lru_cache(maxsize=4096)
def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    # Cached: fnmatch costs microseconds a pattern, and the same few names come back on every request.
    return any(fnmatch.fnmatchcase(name, p) for p in patterns if any(ch in p for ch in "*?["))


def policy_from(raw: Any) -> KeyPolicy | None:
    """A checked policy from a JSON object (None or ``{}``: none); ValueError naming the field when it is wrong."""
    if raw is None or raw == {}:
        return None
    try:
        policy = msgspec.convert(raw, KeyPolicy)
    except msgspec.ValidationError as err:
        raise ValueError(f"invalid policy: {err}") from None
    for name in ("rpm", "tpm", "concurrency", "daily_tokens", "monthly_tokens"):
        value = getattr(policy, name)
        if value is not None and (isinstance(value, bool) or value < 0):
            raise ValueError(f"invalid policy: {name} must be a whole number, 0 or more")
    for name in ("daily_usd", "monthly_usd"):
        value = getattr(policy, name)
        if value is not None and not 0 <= value < 1e12:
            raise ValueError(f"invalid policy: {name} must be 0 or more US dollars")
    models = policy.models
    if models is not None and (len(models) > _MAX_PATTERNS or not all(0 < len(m) <= 256 for m in models)):
        raise ValueError(f"invalid policy: models must be at most {_MAX_PATTERNS} names of 1-256 characters")
    return policy if policy != KeyPolicy() else None


def encode_policy(policy: KeyPolicy | None) -> str | None:
    """The column's JSON text."""
    return None if policy is None else msgspec.json.encode(policy).decode()


def decode_policy(text: str | None) -> KeyPolicy | None:
    """The column's policy; a stored one that no longer converts is treated as the strictest (no model allowed)."""
    if not text:
        return None
    try:
        return policy_from(msgspec.json.decode(text))
    except (ValueError, msgspec.DecodeError):
        return KeyPolicy(models=(), remote=False)


def parse_expiry(value: str | None) -> datetime | None:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time (UTC when it names no zone); None or ``""``: never."""
    if value is None or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"invalid expiry {value!r}: give a date YYYY-MM-DD or an ISO 8601 time") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


async def store_policy(
    database: Database, key_id: int, policy: KeyPolicy | None, expires_at: datetime | bool | None = False
) -> bool:
    """Set key ``key_id``'s policy (and its expiry, unless ``expires_at`` is False); False if there is no such key."""
    if not 0 < key_id < 2**31:  # the id column's INTEGER: a larger id names no key
        return False
    values: dict[str, Any] = {"policy": encode_policy(policy)}
    if expires_at is not False:
        values["expires_at"] = expires_at
    async with database.engine.begin() as conn:
        result = await conn.execute(update(_KEYS).where(_KEYS.c.id == key_id).values(**values))
    return result.rowcount == 1

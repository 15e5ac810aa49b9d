"""Client API keys: create, list, revoke and verify.

Only a key's SHA-256 is stored (256 random bits need no salt nor a slow hash). :meth:`KeyStore.verify` caches
answers for ``cache_ttl`` seconds, so a key revoked by another process stops working within that time.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import time
from datetime import datetime
from typing import cast

import msgspec
from sqlalchemy import Table, bindparam, case, insert, or_, select, update

from minigate.gateway.storage.db import Database
from minigate.gateway.storage.key_policy import KeyPolicy, decode_policy, encode_policy, store_policy
from minigate.gateway.storage.tables import ApiKeyRow, UserRow, UTCDateTime, utcnow

__all__ = ["KEY_PREFIX", "ApiKeyInfo", "KeyStore", "hash_key"]

KEY_PREFIX = "mg-"
_DISPLAY_PREFIX_LEN = 10
_MAX_TOKEN_LEN = 512
_MAX_NAME_LEN = 200
# What create() can produce: the prefix, then token_urlsafe's alphabet. Anything else is rejected before
# hashing or touching the database (and so never fills the cache with junk shapes either).
_TOKEN_RE = re.compile(r"mg-[A-Za-z0-9_-]{16,}")

_KEYS = cast(Table, ApiKeyRow.__table__)
_USERS = cast(Table, UserRow.__table__)


class ApiKeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What may be shown about a key: never the key itself."""

    id: int
    name: str
    prefix: str  # the first characters of the key, to recognise it in a list
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    admin: bool = False  # may use the admin API and pages
    user_id: int | None = None  # whose key (None: the admin's)
    policy: KeyPolicy | None = None  # models, remote, rate limits, budgets (None: none)
    expires_at: datetime | None = None

    @property
    def active(self) -> bool:
        """True until the key is revoked."""
        return self.revoked_at is None


def hash_key(token: str) -> str:
    """The SHA-256 hex digest stored for ``token``."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _well_formed(token: object) -> bool:
    # Length first, so a huge string costs nothing more than len().
    return (
        isinstance(token, str)
        and len(token) <= _MAX_TOKEN_LEN
        and token.isascii()
        and _TOKEN_RE.fullmatch(token) is not None
    )


class KeyStore:
    """API keys in the ``api_keys`` table, with a small verification cache."""

    def __init__(self, database: Database, *, cache_ttl: float = 2.0, cache_size: int = 10_000) -> None:
        """Use ``database``; verification answers are reused for ``cache_ttl`` seconds.

        At most ``cache_size`` answers are cached; the cache is emptied when full so that a flood of
        random tokens cannot grow memory.
        """
        self._db = database
        self._ttl = cache_ttl
        self._cache_size = cache_size
        # sha256 hex -> ((key id, admin), or None for "no such active key"; monotonic expiry)
        self._cache: dict[str, tuple[tuple[int, bool] | None, float]] = {}
        # key id -> when verify() last accepted it; written out by flush_last_used()
        self._used: dict[int, datetime] = {}
        self._owners: dict[int, int | None] = {}  # key id -> its person, as identify() last read it
        self.policies: dict[int, KeyPolicy] = {}  # key id -> its policy, as identify() last read it
        self._expires: dict[int, float] = {}  # key id -> when it expires (wall clock), as identify() last read it
        # person id -> (their own policy, monotonic time it was read): read with their keys, or by load_person()
        self._people: dict[int, tuple[KeyPolicy | None, float]] = {}

    async def create(
        self,
        name: str,
        *,
        admin: bool = False,
        user_id: int | None = None,
        policy: KeyPolicy | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key called ``name`` (of the person ``user_id``); returns its info and the plaintext key (shown
        only this once)."""
        name = name.strip()
        if not name or len(name) > _MAX_NAME_LEN:
            raise ValueError(f"key name must be 1..{_MAX_NAME_LEN} characters")
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        prefix = token[:_DISPLAY_PREFIX_LEN]
        created_at = utcnow()
        stmt = insert(_KEYS).values(
            name=name,
            prefix=prefix,
            key_hash=hash_key(token),
            created_at=created_at,
            admin=admin,
            user_id=user_id,
            policy=encode_policy(policy),
            expires_at=expires_at,
        )
        async with self._db.engine.begin() as conn:
            pk = (await conn.execute(stmt)).inserted_primary_key
        assert pk is not None  # always set for a single-row insert
        key_id = int(pk[0])
        info = ApiKeyInfo(id=key_id, name=name, prefix=prefix, created_at=created_at, admin=admin, user_id=user_id)
        info = msgspec.structs.replace(info, policy=policy, expires_at=expires_at)
        return info, token

    async def list(self, *, user_id: int | None = None) -> builtins.list[ApiKeyInfo]:
        """All keys (or only the person ``user_id``'s), revoked ones included, oldest first."""
        stmt = select(
            _KEYS.c.id,
            _KEYS.c.name,
            _KEYS.c.prefix,
            _KEYS.c.created_at,
            _KEYS.c.revoked_at,
            _KEYS.c.last_used_at,
            _KEYS.c.admin,
            _KEYS.c.user_id,
            _KEYS.c.policy,
            _KEYS.c.expires_at,
        ).order_by(_KEYS.c.id)
        if user_id is not None:
            stmt = stmt.where(_KEYS.c.user_id == user_id)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [ApiKeyInfo(**{**row, "policy": decode_policy(row["policy"])}) for row in rows]

    async def revoke(self, key_id: int, *, user_id: int | None = None) -> bool:
        """Revoke key ``key_id`` (only if it is the person ``user_id``'s, when given); False if there is no such
        key or it was already revoked."""
        stmt = update(_KEYS).where(_KEYS.c.id == key_id, _KEYS.c.revoked_at.is_(None)).values(revoked_at=utcnow())
        if user_id is not None:
            stmt = stmt.where(_KEYS.c.user_id == user_id)
        async with self._db.engine.begin() as conn:
            result = await conn.execute(stmt)
        # This process stops accepting the key at once; others within their cache TTL.
        self._cache = {h: v for h, v in self._cache.items() if v[0] is None or v[0][0] != key_id}
        self._used.pop(key_id, None)
        return result.rowcount == 1

    async def verify(self, token: str) -> int | None:
        """The id of the active key ``token``, or None (malformed, unknown or revoked)."""
        identity = await self.identify(token)
        return None if identity is None else identity[0]

    async def identify(self, token: str) -> tuple[int, bool] | None:
        """``(key id, admin)`` of the active key ``token``, or None (malformed, unknown or revoked)."""
        if not _well_formed(token):
            return None
        digest = hash_key(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        identity: tuple[int, bool] | None
        if cached is not None and cached[1] > now:
            identity = cached[0]
        else:
            # A disabled person's keys stop working like revoked ones.
            stmt = (
                select(_KEYS.c.id, _KEYS.c.admin, _KEYS.c.user_id, _KEYS.c.policy, _KEYS.c.expires_at, _USERS.c.policy)
                .select_from(_KEYS.outerjoin(_USERS, _USERS.c.id == _KEYS.c.user_id))
                .where(_KEYS.c.key_hash == digest, _KEYS.c.revoked_at.is_(None), _USERS.c.disabled_at.is_(None))
            )
            async with self._db.engine.connect() as conn:
                row = (await conn.execute(stmt)).first()
            identity = None if row is None else (int(row[0]), bool(row[1]))
            if row is not None:
                self._owners[int(row[0])] = row[2]
                self._remember(int(row[0]), row[3], row[4])
                if row[2] is not None:
                    self._people[int(row[2])] = (decode_policy(row[5]), now)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[digest] = (identity, now + self._ttl)
        if identity is not None:
            if (ends := self._expires.get(identity[0])) is not None and ends <= time.time():
                return None  # expired: :meth:`expired` tells it from an unknown key
            self._used[identity[0]] = utcnow()
        return identity

    def _remember(self, key_id: int, policy: str | None, expires_at: datetime | None) -> None:
        parsed = decode_policy(policy)
        if parsed is None:
            self.policies.pop(key_id, None)
        else:
            self.policies[key_id] = parsed
        if expires_at is None:
            self._expires.pop(key_id, None)
        else:
            self._expires[key_id] = expires_at.timestamp()

    def expired(self, token: str) -> float | None:
        """When the key ``token`` expired (wall-clock seconds), if :meth:`identify` refused it for that."""
        cached = self._cache.get(hash_key(token)) if _well_formed(token) else None
        identity = cached[0] if cached is not None else None
        ends = self._expires.get(identity[0]) if identity is not None else None
        return ends if ends is not None and ends <= time.time() else None

    async def set_policy(
        self, key_id: int, policy: KeyPolicy | None, expires_at: datetime | bool | None = False
    ) -> bool:
        """Set key ``key_id``'s policy (and expiry, unless False); this process applies it at once, others within
        their cache TTL. False if there is no such key."""
        if not await store_policy(self._db, key_id, policy, expires_at):
            return False
        self._cache = {h: v for h, v in self._cache.items() if v[0] is None or v[0][0] != key_id}
        return True

    def forget_user(self, user_id: int) -> None:
        """Check ``user_id``'s keys again at their next use (the person was disabled or enabled): at once in this
        process, within the cache TTL in others. Refusals are forgotten too: they do not say whose key it was."""
        self._cache = {
            h: v for h, v in self._cache.items() if v[0] is not None and self._owners.get(v[0][0]) != user_id
        }

    def person_policy(self, user_id: int) -> KeyPolicy | None:
        """The person ``user_id``'s own policy, as their key or :meth:`load_person` last read it (None: none)."""
        known = self._people.get(user_id)
        return None if known is None else known[0]

    async def load_person(self, user_id: int) -> KeyPolicy | None:
        """The person ``user_id``'s own policy, read again when this process's copy is older than the cache TTL
        (for their web chat, which presents no key)."""
        known = self._people.get(user_id)
        now = time.monotonic()
        if known is not None and known[1] + self._ttl > now:
            return known[0]
        async with self._db.engine.connect() as conn:
            text = (await conn.execute(select(_USERS.c.policy).where(_USERS.c.id == user_id))).scalar()
        policy = decode_policy(text)
        self._people[user_id] = (policy, now)
        return policy

    def person_changed(self, user_id: int, policy: KeyPolicy | None) -> None:
        """This process applies ``user_id``'s new policy at once (others within the cache TTL)."""
        self._people[user_id] = (policy, time.monotonic())
        self.forget_user(user_id)

    def user_of(self, key_id: int | None) -> int | None:
        """The person whose key ``key_id`` is, as :meth:`identify` last read it (None: the admin's, or unknown)."""
        return None if key_id is None else self._owners.get(key_id)

    async def flush_last_used(self) -> int:
        """Write the ``last_used_at`` times gathered by :meth:`verify`; returns how many keys were updated.

        Meant to be called periodically (and at shutdown) so that requests never wait on this write.
        """
        if not self._used:
            return 0
        used, self._used = self._used, {}
        # Several replicas flush on their own schedules: a time never replaces a newer one already stored.
        used_at, stored = bindparam("b_used", type_=UTCDateTime()), _KEYS.c.last_used_at
        newer = case((or_(stored.is_(None), stored < used_at), used_at), else_=stored)
        stmt = update(_KEYS).where(_KEYS.c.id == bindparam("b_id")).values(last_used_at=newer)
        params = [{"b_id": key_id, "b_used": when} for key_id, when in used.items()]
        try:
            async with self._db.engine.begin() as conn:
                await conn.execute(stmt, params)
        except BaseException:
            # Put them back (without overwriting newer times) so the next flush retries.
            for key_id, when in used.items():
                self._used.setdefault(key_id, when)
            raise
        return len(params)

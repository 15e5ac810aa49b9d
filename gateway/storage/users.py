"""People who log in: create, list, disable, change a password, check one.

Passwords are kept as ``scrypt$n$r$p$salt$hash`` (the standard library's ``hashlib.scrypt``, a 16-byte random salt,
base64 without padding); checking one takes tens of milliseconds of CPU, so it runs in a thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import cast

import msgspec
from sqlalchemy import ColumnElement, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from minigate.gateway.storage.conversations import WebSessionRow
from minigate.gateway.storage.db import Database
from minigate.gateway.storage.key_policy import KeyPolicy, decode_policy, encode_policy
from minigate.gateway.storage.tables import UserRow, utcnow

__all__ = [
    "MIN_PASSWORD",
    "NameTaken",
    "UserInfo",
    "UserStore",
    "check_password",
    "hash_password",
    "owner_user",
    "user_owner",
]

MIN_PASSWORD = 8
_MAX_PASSWORD = 1024
_SCRYPT = (2**14, 8, 1)  # n, r, p: 16 MiB and about 50 ms per hash on this machine's class of CPU
_SALT_BYTES = 16
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
_USERS = cast(Table, UserRow.__table__)
_SESSIONS = cast(Table, WebSessionRow.__table__)


class NameTaken(ValueError):
    """:meth:`UserStore.create`: there is already a person of that name."""


class UserInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What may be shown about a person: never the password hash."""

    id: int
    name: str
    admin: bool
    created_at: datetime
    disabled_at: datetime | None = None
    policy: KeyPolicy | None = None  # their own limits, over all their keys and their web chat (None: none)

    @property
    def active(self) -> bool:
        """True until the person is disabled."""
        return self.disabled_at is None

    @property
    def owner(self) -> str:
        """The owner of this person's conversations."""
        return user_owner(self.id)


def user_owner(user_id: int) -> str:
    """The conversation owner of the person ``user_id`` (``user:7``)."""
    return f"user:{user_id}"


def owner_user(owner: str) -> int | None:
    """The person a conversation owner names (``user:7`` -> 7), or None (the admin, a guest)."""
    kind, _, ident = owner.partition(":")
    return int(ident) if kind == "user" and ident.isdigit() and len(ident) < 12 else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, n: int = _SCRYPT[0], r: int = _SCRYPT[1], p: int = _SCRYPT[2]) -> str:
    """The stored form of ``password``: ``scrypt$n$r$p$salt$hash`` with a fresh salt (slow: call it in a thread)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare; malformed or missing stored forms never
    match). Slow: call it in a thread."""
    if stored is None:
        hash_password(password)  # the same work as a real check, so timing does not say whether the name exists
        return False
    try:
        kind, n, r, p, salt, expected = stored.split("$")
        if kind != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=256 * 1024 * 1024, dklen=32
        )
        return hmac.compare_digest(digest, _unb64(expected))
    except (ValueError, TypeError):
        return False


def _check_new_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= _MAX_PASSWORD:
        raise ValueError(f"a password must be {MIN_PASSWORD}..{_MAX_PASSWORD} characters")


def _info(row: object) -> UserInfo:
    data = dict(cast(dict[str, object], row))
    data.pop("password_hash", None)
    policy = decode_policy(cast(str | None, data.pop("policy", None)))
    return msgspec.structs.replace(msgspec.convert(data, UserInfo), policy=policy)


class UserStore:
    """People in the ``users`` table."""

    def __init__(self, database: Database) -> None:
        """Use ``database``."""
        self._db = database

    async def create(self, name: str, password: str, *, admin: bool = False) -> UserInfo:
        """A new person; ValueError for a bad or taken name or a too short password."""
        if not _NAME_RE.fullmatch(name):
            raise ValueError("a name is 1..100 letters, digits and . _ @ -, starting with a letter or digit")
        _check_new_password(password)
        hashed = await asyncio.to_thread(hash_password, password)
        created_at = utcnow()
        stmt = insert(_USERS).values(name=name, password_hash=hashed, admin=admin, created_at=created_at)
        try:
            async with self._db.engine.begin() as conn:
                pk = (await conn.execute(stmt)).inserted_primary_key
        except IntegrityError:
            raise NameTaken(f"there is already a person called {name!r}") from None
        assert pk is not None
        return UserInfo(id=int(pk[0]), name=name, admin=admin, created_at=created_at)

    async def list(self) -> builtins.list[UserInfo]:
        """Everyone, disabled people included, oldest first."""
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(select(_USERS).order_by(_USERS.c.id))).mappings().all()
        return [_info(row) for row in rows]

    async def get(self, user_id: int) -> UserInfo | None:
        """The person ``user_id``, or None."""
        return await self._one(_USERS.c.id == user_id)

    async def by_name(self, name: str) -> UserInfo | None:
        """The person called ``name``, or None."""
        return await self._one(_USERS.c.name == name[:100])

    async def _one(self, where: ColumnElement[bool]) -> UserInfo | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(_USERS).where(where))).mappings().first()
        return None if row is None else _info(row)

    async def authenticate(self, name: str, password: str) -> UserInfo | None:
        """The active person ``name`` if ``password`` is theirs, else None (unknown names cost the same time)."""
        password = password[:_MAX_PASSWORD]
        stmt = select(_USERS).where(_USERS.c.name == name[:100], _USERS.c.disabled_at.is_(None))
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        stored = None if row is None else row["password_hash"]
        if not await asyncio.to_thread(check_password, password, stored) or row is None:
            return None
        return _info(row)

    async def set_password(self, user_id: int, password: str) -> bool:
        """Give ``user_id`` a new password and end their web sessions (the old password may have leaked); False
        when there is no such person."""
        _check_new_password(password)
        hashed = await asyncio.to_thread(hash_password, password)
        stmt = update(_USERS).where(_USERS.c.id == user_id).values(password_hash=hashed)
        async with self._db.engine.begin() as conn:
            found = (await conn.execute(stmt)).rowcount == 1
            await conn.execute(delete(_SESSIONS).where(_SESSIONS.c.user_id == user_id))
        return found

    async def set_policy(self, user_id: int, policy: KeyPolicy | None) -> bool:
        """Set the person ``user_id``'s own policy (None: no limits of their own); False when there is no such
        person. Tell the key store (``KeyStore.person_changed``) so this process applies it at once."""
        if not 0 < user_id < 2**31:
            return False
        stmt = update(_USERS).where(_USERS.c.id == user_id).values(policy=encode_policy(policy))
        async with self._db.engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def set_admin(self, user_id: int, admin: bool) -> bool:
        """Give or take ``user_id``'s admin flag and end their web sessions, so that their next login has the new
        one; False when there is no such person."""
        stmt = update(_USERS).where(_USERS.c.id == user_id).values(admin=admin)
        async with self._db.engine.begin() as conn:
            found = (await conn.execute(stmt)).rowcount == 1
            await conn.execute(delete(_SESSIONS).where(_SESSIONS.c.user_id == user_id))
        return found

    async def disable(self, user_id: int) -> bool:
        """Disable ``user_id``: no login, no session, no key of theirs works (keys within their cache's 2 s).
        False when there is no such active person."""
        stmt = update(_USERS).where(_USERS.c.id == user_id, _USERS.c.disabled_at.is_(None)).values(disabled_at=utcnow())
        async with self._db.engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def enable(self, user_id: int) -> bool:
        """Let a disabled person in again; False when there is no such disabled person."""
        stmt = update(_USERS).where(_USERS.c.id == user_id, _USERS.c.disabled_at.is_not(None)).values(disabled_at=None)
        async with self._db.engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

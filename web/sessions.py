"""Server-side sessions of the web UI.

The cookie holds 256 random bits and ``web_sessions`` only their SHA-256; logging out, revoking the API key a
session was opened with, or disabling its person ends it at once. Each session has its own CSRF token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, and_, delete, insert, or_, select

from minigate.gateway.storage import Database
from minigate.gateway.storage.conversations import WebSessionRow
from minigate.gateway.storage.tables import ApiKeyRow, UserRow, utcnow
from minigate.gateway.storage.users import user_owner

__all__ = ["COOKIE", "Session", "SessionStore"]

COOKIE = "mg_session"
_SESSIONS = cast(Table, WebSessionRow.__table__)
_KEYS = cast(Table, ApiKeyRow.__table__)
_USERS = cast(Table, UserRow.__table__)
_MAX_TOKEN = 128


@dataclass(frozen=True, slots=True)
class Session:
    """Who a browser is: a person (``owner == "user:7"``), the admin of the password or an admin key
    (``owner == "admin"``), or a guest of a public chat."""

    owner: str
    admin: bool
    csrf: str
    key_id: int | None = None
    user_id: int | None = None  # the person logged in (users.id)
    name: str | None = None  # what the top bar shows: the person's name, or "admin"

    @property
    def member(self) -> bool:
        """Logged in (a person or an admin), not a guest."""
        return self.admin or self.user_id is not None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """Sessions in the ``web_sessions`` table."""

    def __init__(self, database: Database, ttl: float) -> None:
        """Sessions in ``database`` that last ``ttl`` seconds."""
        self._db = database
        self._ttl = ttl

    async def create(
        self, *, admin: bool, key_id: int | None = None, user_id: int | None = None, name: str | None = None
    ) -> tuple[str, Session]:
        """A new session (of the person ``user_id`` called ``name``, if given); returns the cookie value (shown
        only to this browser) and the session."""
        token = secrets.token_urlsafe(32)
        digest = _hash(token)
        owner = user_owner(user_id) if user_id is not None else "admin" if admin else f"guest:{digest[:16]}"
        csrf = secrets.token_urlsafe(32)
        name = name if user_id is not None else "admin" if admin else None
        session = Session(owner=owner, admin=admin, csrf=csrf, key_id=key_id, user_id=user_id, name=name)
        now = utcnow()
        values = {
            "id_hash": digest,
            "owner": owner,
            "admin": admin,
            "key_id": key_id,
            "user_id": user_id,
            "csrf": session.csrf,
            "created_at": now,
            "expires_at": now + timedelta(seconds=self._ttl),
        }
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(_SESSIONS).where(_SESSIONS.c.expires_at < now))
            await conn.execute(insert(_SESSIONS).values(**values))
        return token, session

    async def get(self, token: str | None) -> Session | None:
        """The live session of a cookie value, or None."""
        if not token or len(token) > _MAX_TOKEN:
            return None
        # A session opened with an API key lives only as long as the key: revoked (or gone), the session ends.
        key_live = or_(_SESSIONS.c.key_id.is_(None), and_(_KEYS.c.id.is_not(None), _KEYS.c.revoked_at.is_(None)))
        # A person's session lives only while the person is there and not disabled.
        user_live = or_(_SESSIONS.c.user_id.is_(None), and_(_USERS.c.id.is_not(None), _USERS.c.disabled_at.is_(None)))
        joined = _SESSIONS.outerjoin(_KEYS, _KEYS.c.id == _SESSIONS.c.key_id).outerjoin(
            _USERS, _USERS.c.id == _SESSIONS.c.user_id
        )
        stmt = (
            select(_SESSIONS, _USERS.c.name.label("user_name"))
            .select_from(joined)
            .where(_SESSIONS.c.id_hash == _hash(token), _SESSIONS.c.expires_at > utcnow(), key_live, user_live)
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        if row is None:
            return None
        admin, user_id = bool(row["admin"]), row["user_id"]
        name = row["user_name"] if user_id is not None else "admin" if admin else None
        return Session(
            owner=row["owner"], admin=admin, csrf=row["csrf"], key_id=row["key_id"], user_id=user_id, name=name
        )

    async def delete(self, token: str | None) -> None:
        """End a session (logout)."""
        if token and len(token) <= _MAX_TOKEN:
            async with self._db.engine.begin() as conn:
                await conn.execute(delete(_SESSIONS).where(_SESSIONS.c.id_hash == _hash(token)))

"""Server-side sessions of the web UI.

The cookie holds 256 random bits and ``web_sessions`` only their SHA-256; logging out, or revoking the API key a
session was opened with, ends it at once. Each session has its own CSRF token.
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
from minigate.gateway.storage.tables import ApiKeyRow, utcnow

__all__ = ["COOKIE", "Session", "SessionStore"]

COOKIE = "mg_session"
_SESSIONS = cast(Table, WebSessionRow.__table__)
_KEYS = cast(Table, ApiKeyRow.__table__)
_MAX_TOKEN = 128


@dataclass(frozen=True, slots=True)
class Session:
    """Who a browser is: an admin (``owner == "admin"``) or a guest of a public chat."""

    owner: str
    admin: bool
    csrf: str
    key_id: int | None = None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """Sessions in the ``web_sessions`` table."""

    def __init__(self, database: Database, ttl: float) -> None:
        """Sessions in ``database`` that last ``ttl`` seconds."""
        self._db = database
        self._ttl = ttl

    async def create(self, *, admin: bool, key_id: int | None = None) -> tuple[str, Session]:
        """A new session; returns the cookie value (shown only to this browser) and the session."""
        token = secrets.token_urlsafe(32)
        digest = _hash(token)
        owner = "admin" if admin else f"guest:{digest[:16]}"
        session = Session(owner=owner, admin=admin, csrf=secrets.token_urlsafe(32), key_id=key_id)
        now = utcnow()
        values = {
            "id_hash": digest,
            "owner": owner,
            "admin": admin,
            "key_id": key_id,
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
        stmt = (
            select(_SESSIONS)
            .select_from(_SESSIONS.outerjoin(_KEYS, _KEYS.c.id == _SESSIONS.c.key_id))
            .where(_SESSIONS.c.id_hash == _hash(token), _SESSIONS.c.expires_at > utcnow(), key_live)
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        if row is None:
            return None
        return Session(owner=row["owner"], admin=bool(row["admin"]), csrf=row["csrf"], key_id=row["key_id"])

    async def delete(self, token: str | None) -> None:
        """End a session (logout)."""
        if token and len(token) <= _MAX_TOKEN:
            async with self._db.engine.begin() as conn:
                await conn.execute(delete(_SESSIONS).where(_SESSIONS.c.id_hash == _hash(token)))

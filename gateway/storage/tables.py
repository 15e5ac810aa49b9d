"""SQLAlchemy tables ``usage`` (one row per gateway request, or per minute of alike refused ones), ``api_keys``,
``audit_log`` and ``responses``: the schema's source of truth.

Databases get their schema only from ``migrations/versions`` (a test checks the two agree). Datetimes are UTC;
text columns store NUL as U+FFFD, so SQLite and PostgreSQL keep the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, MetaData, String, Text, false
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ApiKeyRow",
    "AuditRow",
    "Base",
    "ResponseRow",
    "SafeString",
    "SafeText",
    "UTCDateTime",
    "UsageRow",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as UTC and returned timezone-aware.

    SQLite has no timezone type and hands back naive values, so values are normalised to UTC before they
    are stored and tagged as UTC when read: the same code then works on SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; naive values are taken to be UTC already."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime whatever the driver gave back."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class _NulSafe(TypeDecorator[str]):
    """Text whose NUL characters are stored as U+FFFD, the replacement character.

    PostgreSQL's text types cannot hold NUL at all (the driver refuses the whole statement), while SQLite stores
    it; values come from clients and upstreams (a model name, an error, a chat message), so one stray NUL
    would lose a usage row or a message on PostgreSQL only. Replacing it keeps both backends the same.
    """

    impl: Any = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """Replace NUL (the check is a fast scan; most values are returned as they are)."""
        if value is not None and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


class SafeText(_NulSafe):
    """:class:`~sqlalchemy.Text` that stores NUL as U+FFFD on every backend (see :class:`_NulSafe`)."""

    impl = Text
    cache_ok = True


class SafeString(_NulSafe):
    """:class:`~sqlalchemy.String` (``SafeString(64)``) that stores NUL as U+FFFD on every backend."""

    impl = String
    cache_ok = True


# 64-bit ids on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" is an alias of the rowid and
# auto-assigned, so the variant keeps plain INTEGER there (SQLite integers are 64-bit anyway).
_BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base holding the gateway's :class:`~sqlalchemy.MetaData`."""

    # Named constraints and indexes let later migrations drop or alter them by name, which SQLite's
    # batch ("move and copy") mode needs.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class UsageRow(Base):
    """One gateway request: who asked, which deployment answered, tokens and timings."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(_BigIntId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(SafeString(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # The API key used; deliberately no foreign key so usage history survives key deletion.
    key_id: Mapped[int | None] = mapped_column(Integer, index=True)
    endpoint: Mapped[str] = mapped_column(SafeString(32))  # "chat/completions" | "completions" | "embeddings"
    requested_model: Mapped[str] = mapped_column(SafeText)  # as the client sent it, so unbounded
    agent: Mapped[str | None] = mapped_column(SafeText)
    provider: Mapped[str | None] = mapped_column(SafeText)  # the provider that answered
    model: Mapped[str | None] = mapped_column(SafeText)  # the upstream model that answered
    fallbacks: Mapped[int] = mapped_column(Integer)  # number of hops before the answer
    hops: Mapped[str | None] = mapped_column(SafeText)  # JSON list of {"provider","model","error","status"}
    status: Mapped[int] = mapped_column(Integer)  # HTTP status returned to the client
    error: Mapped[str | None] = mapped_column(SafeText)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    streamed: Mapped[bool] = mapped_column(Boolean)
    cost: Mapped[float | None] = mapped_column(Float)  # US dollars, from the price table; None: unpriced
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)  # the person whose key or session it was
    # Refused requests (401, 403, 429 before any upstream), coalesced: how many this row stands for; None when
    # the row is one served request. ``client``: the refused requests' client address.
    refused: Mapped[int | None] = mapped_column(Integer)
    client: Mapped[str | None] = mapped_column(SafeString(64))


class AuditRow(Base):
    """One admin action: who (``actor``, its kind, key and person), through what (``via``: web, api, cli), what
    (``action``, ``target``, ``details``: JSON of field names and safe values, never a secret), when, how it
    ended (``status``)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(_BigIntId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    via: Mapped[str] = mapped_column(SafeString(8))
    actor: Mapped[str] = mapped_column(SafeString(200), index=True)
    actor_kind: Mapped[str] = mapped_column(SafeString(16))  # "user", "key", "admin" (password / bootstrap), "cli"
    key_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(SafeString(200), index=True)
    target: Mapped[str | None] = mapped_column(SafeString(200))
    status: Mapped[int] = mapped_column(Integer)
    details: Mapped[str | None] = mapped_column(SafeText)
    client: Mapped[str | None] = mapped_column(SafeString(64))


class UserRow(Base):
    """A person who logs in to the web UI and owns keys, conversations and usage (issue 17: sharing)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(SafeString(100), unique=True)
    password_hash: Mapped[str | None] = mapped_column(SafeString(255))  # None: cannot log in with a password
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    policy: Mapped[str | None] = mapped_column(SafeText)  # JSON like a key's: their own limits, over all they do


class ApiKeyRow(Base):
    """A client API key; only its SHA-256 and a short display prefix are stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(SafeString(200))
    prefix: Mapped[str] = mapped_column(SafeString(16))
    key_hash: Mapped[str] = mapped_column(SafeString(64), unique=True)  # sha256 hex of the whole key
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)  # whose key (None: the admin's, as before)
    policy: Mapped[str | None] = mapped_column(SafeText)  # JSON: allowed models, remote, rate limits, budgets
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ResponseRow(Base):
    """A stored Responses API answer (``store``): whose it is, its whole input and the Response object, as JSON."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(SafeString(64), primary_key=True)  # "resp_..."
    # The API key that made it (None: the bootstrap admin key); no foreign key, like the usage row's.
    key_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    previous_response_id: Mapped[str | None] = mapped_column(SafeString(128))
    input: Mapped[str] = mapped_column(SafeText)  # JSON list of input items, history from previous_response_id first
    response: Mapped[str] = mapped_column(SafeText)  # JSON Response object, its output items included

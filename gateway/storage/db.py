"""Opening the database (SQLite, or PostgreSQL for replicas): URLs, SQLite pragmas and Alembic migrations.

:func:`open_database` is what the app calls at startup; :func:`migrate` is the synchronous half, also used by
the CLI. Plain ``postgresql://`` and ``sqlite://`` URLs get minigate's drivers (:func:`async_url`, :func:`sync_url`).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

__all__ = [
    "Database",
    "alembic_config",
    "async_url",
    "create_sync_engine",
    "migrate",
    "open_database",
    "redacted",
    "sync_url",
]

logger = logging.getLogger(__name__)

# Async driver -> the sync driver of the same backend, for running migrations (Alembic is synchronous).
_SYNC_DRIVERS = MappingProxyType(
    {
        "aiosqlite": "pysqlite",
        "asyncpg": "psycopg",
        "psycopg_async": "psycopg",
        "aiomysql": "pymysql",
        "asyncmy": "pymysql",
    }
)

# Applied to every new SQLite connection. busy_timeout comes first so that switching the journal mode
# waits for other connections instead of failing with "database is locked". WAL lets readers run
# alongside the writer; synchronous=NORMAL in WAL mode keeps every commit safe from a process crash
# (only an OS crash or power cut can lose the last transactions) while saving an fsync per commit.
_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


# Backend names people write -> SQLAlchemy's ("postgres://" is what Heroku-style URLs use).
_BACKEND_ALIASES = MappingProxyType({"postgres": "postgresql"})
# Backend -> the async driver used when a URL names none (or a synchronous one).
_ASYNC_DRIVERS = MappingProxyType({"sqlite": "aiosqlite", "postgresql": "asyncpg"})
_ASYNC_DRIVER_NAMES = frozenset({"aiosqlite", "asyncpg", "psycopg_async", "aiomysql", "asyncmy"})
# The sync driver used when a URL names none: for PostgreSQL, psycopg 3 (SQLAlchemy would pick psycopg2).
_DEFAULT_SYNC_DRIVERS = MappingProxyType({"postgresql": "psycopg"})

# PostgreSQL: transaction-scoped advisory lock taken around migrations, so replicas starting at once upgrade
# one after another (the others then find the schema at head). Any constant works; this is "minigate" in ASCII.
MIGRATION_LOCK_ID = 0x6D696E6967617465


def _split(u: URL) -> tuple[str, str | None]:
    """``(backend, driver)`` from the URL's drivername, without loading the dialect."""
    backend, _, driver = u.drivername.partition("+")
    return _BACKEND_ALIASES.get(backend, backend), driver or None


def async_url(url: str | URL) -> URL:
    """``url`` with an async driver: what the app's engine uses.

    ``postgresql://``, ``postgres://`` and ``postgresql+psycopg2://`` become ``postgresql+asyncpg://`` (with
    ``sslmode``/``connect_timeout`` renamed to asyncpg's ``ssl``/``timeout``); ``sqlite://`` becomes
    ``sqlite+aiosqlite://``. URLs that already name an async driver are kept as they are.
    """
    u = make_url(url)
    backend, driver = _split(u)
    if driver in _ASYNC_DRIVER_NAMES:
        return u.set(drivername=f"{backend}+{driver}")
    new_driver = _ASYNC_DRIVERS.get(backend)
    if new_driver is None:
        return u
    u = u.set(drivername=f"{backend}+{new_driver}")
    if new_driver == "asyncpg":
        u = _rename_query(u, {"sslmode": "ssl", "connect_timeout": "timeout"})
    return u


def sync_url(url: str | URL) -> URL:
    """The same database as ``url`` reached through a synchronous driver (for Alembic and the usage writer)."""
    u = make_url(url)
    backend, driver = _split(u)
    if driver is None:
        driver = _DEFAULT_SYNC_DRIVERS.get(backend)
    elif driver in _SYNC_DRIVERS:
        if driver == "asyncpg":
            u = _rename_query(u, {"ssl": "sslmode", "timeout": "connect_timeout"})
        driver = _SYNC_DRIVERS[driver]
    return u.set(drivername=f"{backend}+{driver}" if driver else backend)


def _rename_query(u: URL, names: dict[str, str]) -> URL:
    if not any(name in u.query for name in names):
        return u
    query = {names.get(k, k): v for k, v in u.query.items()}
    return u.set(query=query)


def redacted(url: str | URL) -> str:
    """``url`` as text with its password hidden: the only form in which a database URL may be logged or shown."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_file(u: URL) -> Path | None:
    """The database file of a SQLite URL (None for other backends); refuses in-memory databases."""
    if u.get_backend_name() != "sqlite":
        return None
    if not u.database or u.database == ":memory:" or u.query.get("mode") == "memory":
        # Every connection would get its own empty database, so the migrated schema would be invisible.
        raise ValueError("in-memory SQLite databases are not supported; give a file path")
    if u.database.startswith("file:"):
        return None  # a URI filename (uri=true): leave it to SQLite
    return Path(u.database)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def create_sync_engine(url: str | URL, **kwargs: Any) -> Engine:
    """A synchronous engine for the database at ``url`` (async drivers swapped for sync ones).

    SQLite connections get the same pragmas as the app's async engine. ``kwargs`` go to
    :func:`sqlalchemy.create_engine`.
    """
    u = sync_url(url)
    engine = create_engine(u, **kwargs)
    if u.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


def _migration_engine(u: URL) -> Engine:
    engine = create_sync_engine(u, poolclass=NullPool)
    if u.get_backend_name() != "sqlite":
        return engine

    # pysqlite runs DDL outside any transaction by default. Taking over transaction control and starting
    # with BEGIN IMMEDIATE makes the whole upgrade atomic and serialises processes that start at the same
    # time: the second one waits for the write lock, then finds the schema already at head.
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    def on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    return engine


def alembic_config() -> Config:
    """An Alembic config pointing at the installed ``minigate.migrations`` package (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(importlib.resources.files("minigate.migrations")))
    return cfg


def migrate(url: str | URL, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``, synchronously. Safe to run when already there.

    Creates the parent directory of a SQLite file. Blocks; from async code use :func:`open_database` or
    run it in a thread. Concurrent runs from several processes are safe (on SQLite the upgrade holds the
    write lock throughout; on PostgreSQL it holds an advisory lock), but not from several threads of one
    process: Alembic keeps global state.
    """
    u = sync_url(url)
    path = _sqlite_file(u)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = _migration_engine(u)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # PostgreSQL runs DDL inside the transaction too, so the upgrade is atomic; this lock makes
                # replicas that start at once take turns (it is released when the transaction ends).
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
    logger.debug("database %s at revision %s", redacted(u), revision)


class Database:
    """An open database: the async engine and a session factory bound to it."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap ``engine``; normally built by :func:`open_database`."""
        self.engine = engine
        # expire_on_commit=False: objects stay readable after commit without an implicit (async) reload.
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """The backend name, e.g. ``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    async def ping(self) -> bool:
        """True when a trivial query succeeds (for health checks); never raises."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            logger.warning("database ping failed", exc_info=True)
            return False
        return True

    async def close(self) -> None:
        """Close all pooled connections."""
        await self.engine.dispose()


async def open_database(url: str) -> Database:
    """Migrate the database at ``url`` to the latest schema and open it.

    ``url`` is a SQLAlchemy URL such as ``sqlite+aiosqlite:///data/minigate.db`` or
    ``postgresql://user:password@host/minigate`` (normalised by :func:`async_url`). For SQLite the parent
    directory is created and WAL, ``synchronous=NORMAL``, a 5 s busy timeout and foreign keys are set on
    every connection. For PostgreSQL pooled connections are checked before use, so a restarted server costs
    no failed request.
    """
    u = async_url(url)
    _sqlite_file(u)  # fail early on in-memory SQLite, before touching anything
    await asyncio.to_thread(migrate, u)
    if u.get_backend_name() == "sqlite":
        engine = create_async_engine(u)
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    else:
        engine = create_async_engine(u, pool_pre_ping=True)
    return Database(engine)

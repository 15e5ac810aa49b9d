"""Opening the database: URL handling, SQLite pragmas and Alembic migrations.

:func:`open_database` is what the app calls at startup; :func:`migrate` is the synchronous half, also used
by the CLI. URLs are SQLAlchemy URLs; the app's default is ``sqlite+aiosqlite:///<data_dir>/minigate.db``.
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

__all__ = ["Database", "alembic_config", "create_sync_engine", "migrate", "open_database", "sync_url"]

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


def sync_url(url: str | URL) -> URL:
    """The same database as ``url`` reached through a synchronous driver (for Alembic)."""
    u = make_url(url)
    driver = _SYNC_DRIVERS.get(u.get_driver_name())
    return u.set(drivername=f"{u.get_backend_name()}+{driver}") if driver else u


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
    """An Alembic config pointing at the installed ``migrations`` package (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(importlib.resources.files("migrations")))
    return cfg


def migrate(url: str | URL, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``, synchronously. Safe to run when already there.

    Creates the parent directory of a SQLite file. Blocks; from async code use :func:`open_database` or
    run it in a thread. Concurrent runs from several processes are safe (on SQLite the upgrade holds the
    write lock throughout), but not from several threads of one process: Alembic keeps global state.
    """
    u = sync_url(url)
    path = _sqlite_file(u)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = _migration_engine(u)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
    logger.debug("database %s at revision %s", u.render_as_string(hide_password=True), revision)


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

    ``url`` is an async SQLAlchemy URL such as ``sqlite+aiosqlite:///data/minigate.db``. For SQLite the
    parent directory is created and WAL, ``synchronous=NORMAL``, a 5 s busy timeout and foreign keys are
    set on every connection.
    """
    u = make_url(url)
    _sqlite_file(u)  # fail early on in-memory SQLite, before touching anything
    await asyncio.to_thread(migrate, u)
    engine = create_async_engine(u)
    if u.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return Database(engine)

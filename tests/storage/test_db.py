"""Opening the database: migrations, idempotence, pragmas and URL handling (SQLite files and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import minigate
from minigate.gateway.storage import Database, migrate, open_database, sync_url
from minigate.gateway.storage.db import MIGRATION_LOCK_ID, alembic_config, async_url, redacted
from minigate.gateway.storage.tables import Base
from tests import pgserver
from tests.storage.conftest import Backend

_REPO = str(Path(minigate.__file__).resolve().parent.parent)


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def _version(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


async def test_open_creates_parent_dir_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "minigate.db"
    db = await open_database(_url(path))
    try:
        assert await db.ping()
        assert db.dialect == "sqlite"
    finally:
        await db.close()
    assert path.is_file()
    assert {"usage", "api_keys", "alembic_version"} <= _tables(path)
    assert {"ix_usage_request_id", "ix_usage_created_at", "ix_usage_key_id"} <= _indexes(path)
    assert _version(path) == _head()


async def test_open_migrates_to_head(backend: Backend) -> None:
    db = await open_database(backend.url)
    try:
        assert await db.ping()
        assert db.dialect == backend.name
    finally:
        await db.close()
    assert {"usage", "api_keys", "conversations", "messages", "web_sessions", "chain_overrides"} <= backend.tables()
    assert {"ix_usage_request_id", "ix_usage_created_at", "ix_usage_key_id"} <= backend.indexes("usage")
    assert backend.version() == _head()


async def test_migrations_are_idempotent_and_keep_data(backend: Backend) -> None:
    db = await open_database(backend.url)
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO api_keys (name, prefix, key_hash, created_at) "
                "VALUES ('a', 'mg-x', 'h', '2024-01-01 00:00:00')"
            )
        )
    await db.close()

    db = await open_database(backend.url)  # second startup: nothing to do
    await db.close()
    migrate(backend.url)  # and the CLI's synchronous entry point
    assert backend.version() == _head()
    assert backend.count("api_keys") == 1
    assert backend.scalar("SELECT admin FROM api_keys") in (False, 0)  # 0002's default reached the old row


async def test_pragmas_on_every_connection(tmp_path: Path) -> None:
    path = tmp_path / "minigate.db"
    db = await open_database(_url(path))
    try:
        async with db.engine.connect() as conn:
            values = {
                p: (await conn.execute(text(f"PRAGMA {p}"))).scalar()
                for p in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        await db.close()
    assert values == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000, "foreign_keys": 1}
    with sqlite3.connect(path) as conn:  # WAL is a property of the file, seen by any connection
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_migrated_schema_matches_models(backend: Backend) -> None:
    migrate(backend.url)
    with backend.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_column_types_on_postgresql(pg_backend: Backend) -> None:
    # What PostgreSQL gets: 64-bit usage ids from a sequence, real booleans, timestamps with time zone.
    backend = pg_backend
    migrate(backend.url)
    types = dict(
        backend.rows(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        )
    )
    assert types["usage.id"] == "bigint"
    assert backend.scalar("SELECT pg_get_serial_sequence('usage', 'id')") == "public.usage_id_seq"
    for column in ("usage.streamed", "api_keys.admin", "web_sessions.admin"):
        assert types[column] == "boolean", column
    for column in ("usage.created_at", "api_keys.created_at", "messages.created_at", "web_sessions.expires_at"):
        assert types[column] == "timestamp with time zone", column


def test_concurrent_migrations_serialise(backend: Backend) -> None:
    # Several processes starting at once against a fresh database must all succeed. (Processes, not threads:
    # Alembic keeps per-process global state, so one process migrates one database at a time.) SQLite takes
    # the write lock for the whole upgrade; PostgreSQL an advisory lock.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_REPO, os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from minigate.gateway.storage import migrate; migrate(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, backend.url], env=env, stderr=subprocess.PIPE) for _ in range(6)
    ]
    results = [(p.wait(timeout=60), p.stderr.read().decode() if p.stderr else "") for p in procs]
    for p in procs:
        if p.stderr:
            p.stderr.close()
    assert [rc for rc, _ in results] == [0] * 6, results
    assert backend.version() == _head()
    assert backend.count("alembic_version") == 1


def test_migration_waits_for_the_advisory_lock(pg_backend: Backend) -> None:
    # Another replica in the middle of migrating holds the lock: this one waits for it, then finds nothing to do.
    backend = pg_backend
    migrate(backend.url)
    with backend.engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        done = threading.Event()
        worker = threading.Thread(target=lambda: (migrate(backend.url), done.set()))
        worker.start()
        assert not done.wait(0.5)  # blocked on the lock
        holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        worker.join(10)
    assert done.is_set()


def test_downgrade_to_base_and_back(backend: Backend) -> None:
    migrate(backend.url)
    with backend.engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert backend.tables() == {"alembic_version"}
    migrate(backend.url)
    assert {"usage", "api_keys", "conversations"} <= backend.tables()


async def test_ping_false_when_unreachable(tmp_path: Path) -> None:
    db = Database(create_async_engine(_url(tmp_path / "missing-dir" / "x.db")))
    try:
        assert await db.ping() is False
        # aiosqlite stops the thread of a failed connection asynchronously; let it finish before the
        # test's event loop closes, or it reports "Event loop is closed" from that thread.
        await asyncio.sleep(0.1)
    finally:
        await db.close()


async def test_in_memory_sqlite_rejected() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        await open_database("sqlite+aiosqlite:///:memory:")
    with pytest.raises(ValueError, match="in-memory"):
        await open_database("sqlite+aiosqlite://")


async def test_ping_false_when_postgresql_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    db = Database(create_async_engine(async_url(f"postgresql://u:p@127.0.0.1:{port}/x")))
    try:
        assert await db.ping() is False
    finally:
        await db.close()


def test_sync_url() -> None:
    assert sync_url("sqlite+aiosqlite:////data/m.db").drivername == "sqlite+pysqlite"
    assert sync_url("postgresql+asyncpg://u:p@h/db").drivername == "postgresql+psycopg"
    assert sync_url("postgresql+asyncpg://u:p@h/db").password == "p"
    assert sync_url("sqlite:///x.db").drivername == "sqlite"
    assert sync_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert sync_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    ssl = sync_url("postgresql+asyncpg://u:p@h/db?ssl=require&timeout=5")
    assert dict(ssl.query) == {"sslmode": "require", "connect_timeout": "5"}


def test_async_url() -> None:
    assert async_url("postgresql://u:p@h:5433/db").render_as_string(False) == "postgresql+asyncpg://u:p@h:5433/db"
    assert async_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("sqlite:////data/m.db").drivername == "sqlite+aiosqlite"
    assert async_url("sqlite+aiosqlite:////data/m.db").drivername == "sqlite+aiosqlite"
    libpq = async_url("postgresql://u@h/db?sslmode=verify-full&connect_timeout=5")
    assert dict(libpq.query) == {"ssl": "verify-full", "timeout": "5"}
    assert redacted("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"


async def test_plain_postgresql_url_opens(pg_backend: Backend) -> None:
    # What an operator writes in server.database_url: no driver named.
    plain = pg_backend.url
    assert plain.startswith("postgresql://")
    db = await open_database(plain)
    try:
        assert db.engine.url.drivername == "postgresql+asyncpg"
        assert await db.ping()
    finally:
        await db.close()
    db = await open_database(plain.replace("postgresql://", "postgres://", 1))
    await db.close()


def test_no_postgresql_is_a_clear_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither a server URL nor the binaries: the PostgreSQL tests fail saying what to do (they never skip).
    monkeypatch.delenv(pgserver.ENV, raising=False)
    monkeypatch.setattr(pgserver, "_shared", None)
    monkeypatch.setattr(pgserver, "find_bin_dir", lambda: None)
    with pytest.raises(RuntimeError, match=r"MINIGATE_TEST_POSTGRES_URL.*apt-get install postgresql"):
        pgserver.postgres_server()

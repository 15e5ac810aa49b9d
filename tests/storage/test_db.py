"""Opening the database: migrations, idempotence, pragmas and URL handling (real SQLite files)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

import gateway
from gateway.storage import Database, migrate, open_database, sync_url
from gateway.storage.db import alembic_config
from gateway.storage.tables import Base

_REPO = str(Path(gateway.__file__).resolve().parent.parent)


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


async def test_migrations_are_idempotent_and_keep_data(tmp_path: Path) -> None:
    path = tmp_path / "minigate.db"
    db = await open_database(_url(path))
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO api_keys (name, prefix, key_hash, created_at) "
                "VALUES ('a', 'mg-x', 'h', '2024-01-01 00:00:00')"
            )
        )
    await db.close()

    db = await open_database(_url(path))  # second startup: nothing to do
    await db.close()
    migrate(_url(path))  # and the CLI's synchronous entry point
    assert _version(path) == _head()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)


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


def test_migrated_schema_matches_models(tmp_path: Path) -> None:
    path = tmp_path / "minigate.db"
    migrate(_url(path))
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_concurrent_migrations_serialise(tmp_path: Path) -> None:
    # Several processes starting at once against a fresh file must all succeed. (Processes, not threads:
    # Alembic keeps per-process global state, so one process migrates one database at a time.)
    path = tmp_path / "minigate.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_REPO, os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from gateway.storage import migrate; migrate(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, _url(path)], env=env, stderr=subprocess.PIPE) for _ in range(4)
    ]
    results = [(p.wait(timeout=60), p.stderr.read().decode() if p.stderr else "") for p in procs]
    for p in procs:
        if p.stderr:
            p.stderr.close()
    assert [rc for rc, _ in results] == [0, 0, 0, 0], results
    assert _version(path) == _head()


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    path = tmp_path / "minigate.db"
    migrate(_url(path))
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
    finally:
        engine.dispose()
    assert _tables(path) == {"alembic_version"}
    migrate(_url(path))
    assert {"usage", "api_keys"} <= _tables(path)


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


def test_sync_url() -> None:
    assert sync_url("sqlite+aiosqlite:////data/m.db").drivername == "sqlite+pysqlite"
    assert sync_url("postgresql+asyncpg://u:p@h/db").drivername == "postgresql+psycopg"
    assert sync_url("postgresql+asyncpg://u:p@h/db").password == "p"
    assert sync_url("sqlite:///x.db").drivername == "sqlite"

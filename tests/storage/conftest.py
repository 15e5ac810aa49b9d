"""Every storage test that takes ``backend`` runs twice: on a SQLite file and on a fresh PostgreSQL database.

PostgreSQL comes from :mod:`tests.pgserver` (``$MINIGATE_TEST_POSTGRES_URL`` or a throwaway server); without
one the PostgreSQL half fails, it is never skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from minigate.gateway.storage import Database, open_database, sync_url
from tests.pgserver import Databases, postgres_server

BACKENDS = ("sqlite", "postgresql")


class Backend:
    """One empty database of either kind, with an independent synchronous connection to look at it."""

    def __init__(self, name: str, url: URL) -> None:
        self.name = name
        self._url = url
        self._engine: Engine | None = None

    @property
    def url(self) -> str:
        """The URL to give the app (a plain ``sqlite+aiosqlite://`` or ``postgresql://`` URL, password kept)."""
        if self.name == "sqlite":
            return self._url.render_as_string(hide_password=False)
        return self._url.set(drivername="postgresql").render_as_string(hide_password=False)

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file (SQLite only)."""
        assert self.name == "sqlite" and self._url.database
        return Path(self._url.database)

    @property
    def engine(self) -> Engine:
        """A synchronous engine of our own, as an operator's tool (or another process) would use."""
        if self._engine is None:
            self._engine = create_engine(sync_url(self._url), poolclass=NullPool)
        return self._engine

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run a statement in a transaction of its own."""
        with self.engine.begin() as conn:
            conn.execute(text(sql), params or {})

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params or {})]

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        """The single value of a query."""
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params or {}).scalar()

    def count(self, table: str, where: str = "1=1") -> int:
        """``SELECT count(*)`` of ``table``."""
        return int(self.scalar(f"SELECT count(*) FROM {table} WHERE {where}"))

    def tables(self) -> set[str]:
        """The names of the tables in the database."""
        with self.engine.connect() as conn:
            return set(inspect(conn).get_table_names())

    def indexes(self, table: str) -> set[str]:
        """The names of ``table``'s indexes."""
        with self.engine.connect() as conn:
            return {str(ix["name"]) for ix in inspect(conn).get_indexes(table)}

    def version(self) -> str:
        """The Alembic revision the database is at."""
        return str(self.scalar("SELECT version_num FROM alembic_version"))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


@pytest.fixture(scope="session")
def postgres() -> Databases:
    """The PostgreSQL server of this test session (see :mod:`tests.pgserver`)."""
    try:
        return postgres_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def _postgres_backend(databases: Databases) -> Iterator[Backend]:
    url = databases.create()
    b = Backend("postgresql", url)
    try:
        yield b
    finally:
        b.close()
        databases.drop(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An empty database, SQLite or PostgreSQL (not migrated yet)."""
    if request.param == "sqlite":
        b = Backend("sqlite", make_url(f"sqlite+aiosqlite:///{tmp_path / 'minigate.db'}"))
        yield b
        b.close()
        return
    yield from _postgres_backend(request.getfixturevalue("postgres"))


@pytest.fixture
def pg_backend(postgres: Databases) -> Iterator[Backend]:
    """An empty PostgreSQL database, for what only PostgreSQL has (advisory locks, its column types)."""
    yield from _postgres_backend(postgres)


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[Database]:
    """The backend's database, migrated and open."""
    database = await open_database(backend.url)
    yield database
    await database.close()


@pytest.fixture
async def other(backend: Backend, db: Database) -> AsyncIterator[Database]:
    """A second connection pool on the same (migrated) database: another worker or replica."""
    database = await open_database(backend.url)
    yield database
    await database.close()


class Clock:
    """A wall clock the test moves by hand (``now`` in seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

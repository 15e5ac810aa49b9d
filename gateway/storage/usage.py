"""Usage logging with group commit.

Every gateway request ends with ``await writer.record(UsageRecord(...))``, which returns only once the row
is committed. One writer thread takes everything queued since its last commit (up to ``max_batch`` rows),
inserts it with a single executemany in one transaction and then wakes every caller: under load, hundreds
of requests share one commit; when idle, a row is written as soon as it arrives.

A batch that fails because of its contents (a constraint violation) is retried row by row, so one bad row
fails only its own caller; a batch that fails because of the database (locked, disk full) is retried once
as a whole. Callers whose rows were not stored get :class:`UsageWriteError`; the writer keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from datetime import datetime
from typing import Any, cast

import msgspec
from sqlalchemy import Table, case, func, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.pool import NullPool

from gateway.storage.db import Database, create_sync_engine
from gateway.storage.tables import UsageRow, utcnow

__all__ = ["UsageRecord", "UsageWriteError", "UsageWriter"]

logger = logging.getLogger(__name__)

# Bounds on values that come from clients or upstreams, so one oversized value cannot make an insert
# fail on a backend that enforces lengths (PostgreSQL) or bloat the table.
_MAX_REQUEST_ID = 64
_MAX_ERROR = 4000

_USAGE = cast(Table, UsageRow.__table__)


class UsageRecord(msgspec.Struct, kw_only=True):
    """One gateway request as stored in the ``usage`` table (all columns but ``id``).

    ``hops`` lists the failed attempts before the answer, each ``{"provider", "model", "error",
    "status"}``; ``fallbacks`` is normally ``len(hops)``.
    """

    request_id: str
    endpoint: str  # "chat/completions" | "completions" | "embeddings"
    requested_model: str
    status: int  # HTTP status returned to the client
    latency_ms: float
    created_at: datetime = msgspec.field(default_factory=utcnow)
    key_id: int | None = None
    agent: str | None = None
    provider: str | None = None
    model: str | None = None
    fallbacks: int = 0
    hops: list[dict[str, Any]] | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    ttft_ms: float | None = None
    streamed: bool = False


class UsageWriteError(RuntimeError):
    """The row was not stored; ``__cause__`` holds the database error when there was one."""


def _to_params(row: UsageRecord) -> dict[str, Any]:
    params = msgspec.structs.asdict(row)
    params["request_id"] = row.request_id[:_MAX_REQUEST_ID]
    if row.error is not None:
        params["error"] = row.error[:_MAX_ERROR]
    if row.hops is not None:
        params["hops"] = msgspec.json.encode(row.hops).decode()
    return params


_Pending = tuple[dict[str, Any], asyncio.Future[None]]
_Outcome = Exception | None  # per row: None when stored, else why not


def _row_specific(exc: Exception) -> bool:
    """Whether ``exc`` is about the rows' contents (a constraint, a bad value) rather than the database."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    # A StatementError that is not a DBAPIError failed while binding values, before reaching the database.
    return (isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)) or isinstance(
        exc, TypeError | ValueError
    )


def _settle(batch: list[_Pending], outcomes: list[_Outcome]) -> None:
    """Wake each caller of ``batch`` with its row's outcome (runs on the event loop)."""
    for (_, fut), outcome in zip(batch, outcomes, strict=True):
        if fut.done():
            continue
        if outcome is None:
            fut.set_result(None)
        else:
            err = UsageWriteError(f"usage row not stored: {outcome!r}")
            err.__cause__ = outcome
            fut.set_exception(err)


def _finish(stopped: asyncio.Future[None]) -> None:
    if not stopped.done():
        stopped.set_result(None)


class UsageWriter:
    """Writes :class:`UsageRecord` rows with group commit; see the module docstring.

    Call :meth:`start` before :meth:`record` and :meth:`close` at shutdown (it flushes what is queued).
    :meth:`query_recent` and :meth:`totals` read the table and work whether or not the writer runs.
    """

    def __init__(self, database: Database, *, max_batch: int = 500) -> None:
        """Prepare a writer for ``database``; ``max_batch`` caps the rows per transaction."""
        self._db = database
        self._max_batch = max_batch
        # The writer is a thread of its own fed by a thread-safe queue: a row costs one hand-off to the thread
        # and one back, where an asyncio task handing batches to an executor cost two more loop wake-ups
        # (measured: an idle single-row commit took 190 us that way). Unbounded on purpose: each caller waits
        # for its own row, so the queue never holds more rows than there are requests in flight.
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closed = False
        self._engine: Engine | None = None
        self._conn: Connection | None = None  # used only on the writer thread

    async def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._closed:
            raise RuntimeError("UsageWriter is closed")
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._stopped = self._loop.create_future()
            self._engine = create_sync_engine(self._db.engine.url, poolclass=NullPool)
            self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
            self._thread.start()

    async def close(self) -> None:
        """Stop accepting rows, commit everything already queued, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None or self._stopped is None:
            return
        self._queue.put(None)  # sentinel: everything queued before it gets written
        await self._stopped
        if self._engine is not None:
            self._engine.dispose()

    async def record(self, row: UsageRecord) -> None:
        """Store ``row``; returns once it is committed, raises :class:`UsageWriteError` if it was not."""
        if self._closed or self._thread is None or self._loop is None or not self._thread.is_alive():
            raise UsageWriteError("usage writer is not running")
        try:
            params = _to_params(row)
        except Exception as exc:  # e.g. hops that cannot be encoded as JSON
            raise UsageWriteError("usage row cannot be encoded") from exc
        fut: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((params, fut))
        # If the caller is cancelled the future is cancelled with it; the row is still written.
        await fut

    def _run(self) -> None:
        loop, stopped = self._loop, self._stopped
        assert loop is not None and stopped is not None
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                batch: list[_Pending] = []
                if first is None:
                    stop = True
                else:
                    batch.append(first)
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                if batch:
                    try:
                        outcomes = self._write([params for params, _ in batch])
                    except Exception as exc:  # a bug here must not leave callers waiting forever
                        logger.exception("usage writer failed a batch")
                        outcomes = [exc] * len(batch)
                    loop.call_soon_threadsafe(_settle, batch, outcomes)
        finally:
            self._close_conn()
            loop.call_soon_threadsafe(_finish, stopped)

    def _write(self, rows: list[dict[str, Any]]) -> list[_Outcome]:
        """Insert a batch; on failure retry it once whole, or row by row when a row's contents are to blame."""
        try:
            self._insert(rows)
            return [None] * len(rows)
        except Exception as exc:
            if _row_specific(exc):
                logger.warning("usage batch of %d rows failed; retrying row by row: %r", len(rows), exc)
                return self._write_one_by_one(rows)
            # The database as a whole failed (locked past the busy timeout, disk full, connection lost):
            # one more try for the whole batch, then give up on it.
            logger.warning("usage batch of %d rows failed; retrying once: %r", len(rows), exc)
        try:
            self._insert(rows)
            return [None] * len(rows)
        except Exception as again:
            logger.error("usage batch of %d rows not stored: %r", len(rows), again)
            return [again] * len(rows)

    def _write_one_by_one(self, rows: list[dict[str, Any]]) -> list[_Outcome]:
        """Isolate the bad rows of a batch that failed because of its contents."""
        outcomes: list[_Outcome] = []
        for i, row in enumerate(rows):
            try:
                self._insert([row])
            except Exception as exc:
                logger.error("usage row %s not stored: %r", row.get("request_id"), exc)
                if not _row_specific(exc):
                    # Not this row's fault: the rest would only wait out the same failure one by one.
                    return outcomes + [exc] * (len(rows) - i)
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` in one transaction (runs on the writer thread)."""
        assert self._engine is not None
        # One connection held for the writer's life saves a pool checkout and reset per batch.
        if self._conn is None:
            self._conn = self._engine.connect()
        try:
            with self._conn.begin():
                self._conn.execute(insert(_USAGE), rows)
        except Exception:
            self._close_conn()  # start afresh next time, in case the error broke the connection
            raise

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("closing the usage connection failed", exc_info=True)

    async def query_recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` rows, newest first, as dicts keyed by column (``hops`` decoded)."""
        stmt = select(_USAGE).order_by(_USAGE.c.id.desc()).limit(limit)
        async with self._db.engine.connect() as conn:
            result = await conn.execute(stmt)
            rows = [dict(r) for r in result.mappings()]
        for r in rows:
            if r["hops"] is not None:
                r["hops"] = msgspec.json.decode(r["hops"])
        return rows

    async def totals(self) -> dict[str, int]:
        """Aggregates over all rows: ``requests``, ``errors`` (status >= 400) and token sums."""
        c = _USAGE.c
        stmt = select(
            func.count().label("requests"),
            func.coalesce(func.sum(case((c.status >= 400, 1), else_=0)), 0).label("errors"),
            func.coalesce(func.sum(c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(c.total_tokens), 0).label("total_tokens"),
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().one()
        return {k: int(v) for k, v in row.items()}

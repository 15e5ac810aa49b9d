"""The usage writer's thread: group commit, and rows held in memory while the database refuses them.

Private to :mod:`minigate.gateway.storage.usage`, whose docstring describes the behaviour; this module is the mechanics.
Callers hand ``(params, future)`` pairs to :attr:`CommitThread.queue` (``None`` stops the thread); each future
gets True (committed), False (held for a later attempt) or a :class:`UsageWriteError`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError, StatementError

from minigate.gateway.storage.tables import UsageRow

__all__ = ["CommitThread", "UsageWriteError", "retrieve"]

logger = logging.getLogger("minigate.gateway.storage.usage")

_USAGE = cast(Table, UsageRow.__table__)
_RETRY_FIRST, _RETRY_MAX = 0.25, 5.0  # backoff between attempts to store held rows (seconds)
_REMIND_EVERY = 30.0  # while rows are held, a warning at most this often says how many


class UsageWriteError(RuntimeError):
    """The row was not stored and will not be; ``__cause__`` holds the database error when there was one."""


class _Held:
    """The outcome of a row the database could not take now: kept and retried."""


_HELD = _Held()
_Pending = tuple[dict[str, Any], asyncio.Future[bool]]
_Outcome = Exception | _Held | None  # per row: None when stored, _HELD when kept for later, else why not


def _row_specific(exc: Exception) -> bool:
    """Whether ``exc`` is about the rows' contents (a constraint, a value the driver or the database cannot take)
    rather than the database. Only the latter holds rows: a row's own fault must never wedge the writer."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, DBAPIError):
        # A ProgrammingError the driver raised itself, before the database saw the statement, is a value it cannot
        # send (sqlite3: "Error binding parameter"; psycopg: "cannot adapt type"). One from the database (a
        # missing table or privilege) has a code, and waits for the database to be put right.
        orig = exc.orig
        from_driver = getattr(orig, "sqlstate", None) is None and getattr(orig, "sqlite_errorcode", None) is None
        return isinstance(exc, ProgrammingError) and from_driver
    # A StatementError that is not a DBAPIError failed while binding values, before reaching the database; the
    # drivers raise plain TypeError, ValueError or OverflowError (sqlite3: an int beyond 64 bits) for a value.
    return isinstance(exc, StatementError | TypeError | ValueError | ArithmeticError)


def _settle(batch: list[_Pending], outcomes: list[_Outcome]) -> None:
    """Wake each caller of ``batch`` with its row's outcome (runs on the event loop)."""
    for (_, fut), outcome in zip(batch, outcomes, strict=True):
        if fut.done():
            continue
        if outcome is None or isinstance(outcome, _Held):
            fut.set_result(outcome is None)
        else:
            err = UsageWriteError(f"usage row not stored: {outcome!r}")
            err.__cause__ = outcome
            fut.set_exception(err)


def retrieve(fut: asyncio.Future[bool]) -> None:
    """A done-callback for row futures."""
    # A caller that stopped waiting (held row, ack timeout) never reads its future: mark any error as seen.
    if not fut.cancelled():
        fut.exception()


def _finish(stopped: asyncio.Future[None]) -> None:
    if not stopped.done():
        stopped.set_result(None)


class CommitThread:
    """The writer thread and its state; everything but :attr:`queue` and the counters is used on that thread."""

    def __init__(
        self,
        engine: Engine,
        loop: asyncio.AbstractEventLoop,
        stopped: asyncio.Future[None],
        *,
        max_batch: int,
        close_timeout: float,
    ) -> None:
        """Prepare the thread for ``engine``; ``stopped`` is resolved on ``loop`` when it ends."""
        self.engine, self._loop, self._stopped = engine, loop, stopped
        self._max_batch, self._close_timeout = max_batch, close_timeout
        # Unbounded on purpose: each caller waits for its own row, so the queue never holds more rows than there
        # are requests in flight; while rows are held, the writer's ``max_held`` bounds it.
        self.queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._conn: Connection | None = None
        # Rows the database refused for now, oldest first, and when to try them again.
        self._held: deque[_Pending] = deque()
        self._retry_delay = _RETRY_FIRST
        self._retry_at = 0.0
        self._outage_since: float | None = None  # when the first write that failed began
        self._writing_since: float | None = None  # when the write in progress began
        self._reminded = 0.0
        self._lost_lock = threading.Lock()
        self.degraded = False  # True while the database refuses rows (or commits slower than callers wait)
        self.lost = 0  # rows given up on (each logged with its contents)
        self.stored = 0  # rows committed
        self.thread = threading.Thread(target=self.run, name="usage-writer", daemon=True)

    @property
    def held(self) -> int:
        """Rows kept in memory because the database refused them for now."""
        return len(self._held)

    @property
    def stalled_for(self) -> float:
        """Seconds since the first write that failed began, while rows are held, or since the write in progress
        began; 0 when rows are neither held nor being written. Read by other threads: one snapshot of each."""
        since = [t for t in (self._outage_since, self._writing_since) if t is not None]
        return time.monotonic() - min(since) if since else 0.0

    def run(self) -> None:
        """The thread's body: write batches until the sentinel, then flush what is held."""
        loop, stopped = self._loop, self._stopped
        try:
            stop = False
            while not stop:
                batch, stop = self._take()
                if batch and not self._held:
                    self._writing_since = time.monotonic()
                    try:
                        outcomes, cause = self._write([params for params, _ in batch])
                    except Exception as exc:  # a bug here must not leave callers waiting forever
                        logger.exception("usage writer failed a batch")
                        outcomes, cause = list[_Outcome]([exc] * len(batch)), None
                    held = [item for item, outcome in zip(batch, outcomes, strict=True) if outcome is _HELD]
                    if held:
                        self._hold(held, cause)
                    self._writing_since = None
                    loop.call_soon_threadsafe(_settle, batch, outcomes)
                elif batch:  # rows already wait: new ones go behind them, so they are stored in order
                    self._held.extend(batch)
                    loop.call_soon_threadsafe(_settle, batch, list[_Outcome]([_HELD] * len(batch)))
                if self._held and time.monotonic() >= self._retry_at:
                    self._retry_held()
            self._flush_at_close()
        finally:
            self._close_conn()
            loop.call_soon_threadsafe(_finish, stopped)

    def _take(self) -> tuple[list[_Pending], bool]:
        """What is queued (waiting for the first row, or until the next retry of held rows); and whether to stop."""
        try:
            if self._held:
                first = self.queue.get(timeout=max(0.001, self._retry_at - time.monotonic()))
            else:
                first = self.queue.get()
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _write(self, rows: list[dict[str, Any]]) -> tuple[list[_Outcome], Exception | None]:
        """Insert a batch; row by row when a row's contents are to blame. Rows the database refused for now
        are ``_HELD``, with the database's error as the second value."""
        try:
            self._insert(rows)
            return self._committed(len(rows)), None
        except Exception as exc:
            if _row_specific(exc):
                logger.warning("usage batch of %d rows failed; retrying row by row: %r", len(rows), exc)
                return self._write_one_by_one(rows)
            if not getattr(exc, "connection_invalidated", False):
                return [_HELD] * len(rows), exc
            # A connection the server dropped (a restart, a proxy): a fresh one usually works at once.
            logger.warning("usage connection lost; reconnecting: %r", exc)
        try:
            self._insert(rows)
            return self._committed(len(rows)), None
        except Exception as again:
            return [_HELD] * len(rows), again

    def _write_one_by_one(self, rows: list[dict[str, Any]]) -> tuple[list[_Outcome], Exception | None]:
        """Isolate the bad rows of a batch that failed because of its contents."""
        outcomes: list[_Outcome] = []
        for i, row in enumerate(rows):
            try:
                self._insert([row])
            except Exception as exc:
                if not _row_specific(exc):
                    # Not this row's fault: the rest wait for the database with it.
                    return outcomes + [_HELD] * (len(rows) - i), exc
                self.lose([row], f"the database cannot take its contents: {exc!r}")
                outcomes.append(exc)
            else:
                outcomes.extend(self._committed(1))
        return outcomes, None

    def _committed(self, count: int) -> list[_Outcome]:
        self.stored += count
        if not self._held:
            self.degraded = False  # commits work (again): callers wait for theirs
        return [None] * count

    def _hold(self, rows: list[_Pending], cause: Exception | None) -> None:
        """Keep ``rows`` for a later attempt; the first refusal of an outage is logged."""
        self._held.extend(rows)
        self.degraded = True
        now = time.monotonic()
        self._retry_delay = _RETRY_FIRST
        self._retry_at = now + self._retry_delay
        if self._outage_since is None:
            self._outage_since = self._writing_since or now
            self._reminded = now
            logger.warning(
                "the database refuses usage rows (%r); they are kept in memory and retried",
                cause,
                extra={"event": "usage_held", "held": len(self._held), "error": repr(cause)},
            )

    def _retry_held(self) -> None:
        """Try to store the held rows, oldest first; on failure wait longer before the next attempt."""
        loop = self._loop
        while self._held:
            chunk = [self._held[i] for i in range(min(self._max_batch, len(self._held)))]
            outcomes, cause = self._write([params for params, _ in chunk])
            if cause is not None:
                now = time.monotonic()
                self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
                self._retry_at = now + self._retry_delay
                if now - self._reminded >= _REMIND_EVERY:
                    self._reminded = now
                    logger.warning(
                        "%d usage rows still wait for the database: %r",
                        len(self._held),
                        cause,
                        extra={"event": "usage_held", "held": len(self._held), "error": repr(cause)},
                    )
                return
            for _ in chunk:
                self._held.popleft()
            loop.call_soon_threadsafe(_settle, chunk, outcomes)
        since = self._outage_since
        self._outage_since = None
        self.degraded = False
        logger.warning(
            "the database takes usage rows again; every held row is stored",
            extra={"event": "usage_recovered", "outage_s": round(time.monotonic() - (since or 0.0), 3)},
        )

    def _flush_at_close(self) -> None:
        """Keep trying the held rows for ``close_timeout`` s, then log each one still refused as lost."""
        deadline = time.monotonic() + self._close_timeout
        while self._held and time.monotonic() < deadline:
            time.sleep(max(0.0, min(self._retry_at, deadline) - time.monotonic()))
            self._retry_held()
        if self._held:
            batch = list(self._held)
            self._held.clear()
            self.lose([params for params, _ in batch], "the database still refused it when the gateway stopped")
            error = RuntimeError("the database refused it until the writer stopped")
            self._loop.call_soon_threadsafe(_settle, batch, list[_Outcome]([error] * len(batch)))

    def lose(self, rows: list[dict[str, Any]], why: str) -> None:
        """Give up on ``rows``: count them and log each with its contents, to be restored by hand."""
        with self._lost_lock:
            self.lost += len(rows)
        for params in rows:
            logger.error(
                "usage row %s lost: %s",
                params.get("request_id"),
                why,
                extra={"event": "usage_row_lost", "row": params},
            )

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` in one transaction (runs on the writer thread)."""
        # One connection held for the writer's life saves a pool checkout and reset per batch.
        if self._conn is None:
            self._conn = self.engine.connect()
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

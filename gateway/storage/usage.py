"""Usage rows: group commit, and rows held in memory while the database refuses them.

Every request ends with ``await writer.record(UsageRecord(...))``: True once committed, False while held. How
batches, held and lost rows behave is in docs/architecture.md, "Usage rows".
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, cast

import msgspec
from sqlalchemy import Table, case, func, select
from sqlalchemy.pool import NullPool

from minigate.gateway.core.tokens import COUNT_FIELDS, MAX_TOKENS, MAX_TOTAL, token_counts
from minigate.gateway.storage._commit import CommitThread, UsageWriteError, retrieve
from minigate.gateway.storage.db import Database, create_sync_engine
from minigate.gateway.storage.sql import count_sum
from minigate.gateway.storage.tables import UsageRow, utcnow

__all__ = ["STOPPED", "UsageRecord", "UsageWriteError", "UsageWriter", "outcome"]

logger = logging.getLogger(__name__)

# Bounds on values that come from clients or upstreams, so one oversized value cannot make an insert
# fail on a backend that enforces lengths (PostgreSQL) or bloat the table.
_MAX_REQUEST_ID = 64
_MAX_ERROR = 4000
_MAX_MS = 1e9  # eleven days: longer than any request runs (and than NaN, which fails every comparison)

_USAGE = cast(Table, UsageRow.__table__)

STOPPED = 499
"""The status stored for an answer the client stopped (or left) before it ended: not an error, and its latency
says how long the client read, not how fast the gateway answered."""


def outcome(status: int, refused: int | None = None) -> str:
    """What a stored row means: ``"ok"``, ``"stopped"`` (the client stopped the answer), ``"refused"`` (401, 403
    or 429 before any upstream: ``refused`` requests coalesced into the row) or ``"error"``."""
    if refused is not None:
        return "refused"
    if status == STOPPED:
        return "stopped"
    return "error" if status >= 400 else "ok"


class UsageRecord(msgspec.Struct, kw_only=True):
    """One gateway request as stored in the ``usage`` table (all columns but ``id``).

    ``hops`` lists the failed attempts before the answer, each ``{"provider", "model", "error", "status",
    "class", "code"}``; ``fallbacks`` is normally ``len(hops)``.
    """

    request_id: str
    endpoint: str  # "chat/completions", "completions", "embeddings", "responses" or "messages"
    requested_model: str
    status: int  # HTTP status returned to the client
    latency_ms: float
    created_at: datetime = msgspec.field(default_factory=utcnow)
    key_id: int | None = None
    user_id: int | None = None  # the person whose key or web session made the request
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
    cost: float | None = None  # US dollars, from the price table (None: unpriced)
    refused: int | None = None  # refused requests (401, 403, 429) this row stands for; None: one served request
    client: str | None = None  # the client address of refused requests


def _to_params(row: UsageRecord) -> dict[str, Any]:
    params = msgspec.structs.asdict(row)
    params["request_id"] = row.request_id[:_MAX_REQUEST_ID]
    # Checked again here, whoever built the row: a count the database cannot take would lose the row, one it
    # can (negative, huge) would break the sums of every report.
    params.update(token_counts({name: params[name] for name in COUNT_FIELDS})[0])
    params["latency_ms"] = _duration(row.latency_ms) or 0.0
    params["ttft_ms"] = _duration(row.ttft_ms)
    if row.error is not None:
        params["error"] = row.error[:_MAX_ERROR]
    if row.hops is not None:
        params["hops"] = msgspec.json.encode(row.hops).decode()
    if row.client is not None:
        params["client"] = row.client[:64]
    return params


def _duration(value: object) -> float | None:
    """A duration in ms as stored: a finite, non-negative number, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= _MAX_MS:
        return float(value)
    return None


class UsageWriter:
    """Writes :class:`UsageRecord` rows with group commit; see the module docstring.

    Call :meth:`start` before :meth:`record` and :meth:`close` at shutdown (it flushes what is queued and held).
    :meth:`query_recent` and :meth:`totals` read the table and work whether or not the writer runs.
    """

    def __init__(
        self,
        database: Database,
        *,
        max_batch: int = 500,
        ack_timeout: float = 2.0,
        max_held: int = 100_000,
        close_timeout: float = 10.0,
    ) -> None:
        """Prepare a writer for ``database``.

        ``max_batch`` caps the rows per transaction; ``ack_timeout`` is how long ``record`` waits for a commit
        before it lets its caller go on (the row stays queued); ``max_held`` bounds the rows kept in memory
        while the database refuses them; ``close_timeout`` is how long :meth:`close` keeps trying to store them.
        """
        self._db = database
        self._max_batch = max_batch
        self._ack_timeout = ack_timeout
        self._max_held = max_held
        self._close_timeout = close_timeout
        # The writer is a thread of its own fed by a thread-safe queue: a row costs one hand-off to the thread
        # and one back, where an asyncio task handing batches to an executor cost two more loop wake-ups
        # (measured: an idle single-row commit took 190 us that way).
        self._commit: CommitThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def held(self) -> int:
        """Rows kept in memory now because the database refused them (0 when all is well)."""
        return 0 if self._commit is None else self._commit.held

    @property
    def lost(self) -> int:
        """Rows given up on since the writer started (each was logged with its contents)."""
        return 0 if self._commit is None else self._commit.lost

    @property
    def held_for(self) -> float:
        """Seconds the oldest row waiting for the database has waited (held, or in a write not finished yet); 0
        when every row is committed. ``/ready`` turns red when this passes a few seconds."""
        return 0.0 if self._commit is None else self._commit.stalled_for

    @property
    def degraded(self) -> bool:
        """True while the database refuses rows, or commits them slower than ``ack_timeout``."""
        return self._commit is not None and self._commit.degraded

    async def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._closed:
            raise RuntimeError("UsageWriter is closed")
        if self._commit is None:
            self._loop = asyncio.get_running_loop()
            self._stopped = self._loop.create_future()
            engine = create_sync_engine(self._db.engine.url, poolclass=NullPool)
            self._commit = CommitThread(
                engine, self._loop, self._stopped, max_batch=self._max_batch, close_timeout=self._close_timeout
            )
            self._commit.thread.start()

    async def close(self) -> None:
        """Stop accepting rows, commit everything queued and held (trying up to ``close_timeout`` s), then stop."""
        if self._closed:
            return
        self._closed = True
        if self._commit is None or self._stopped is None:
            return
        self._commit.queue.put(None)  # sentinel: everything queued before it gets written
        await self._stopped
        self._commit.engine.dispose()

    async def record(self, row: UsageRecord) -> bool:
        """Store ``row``: True once committed, False when it is kept in memory for now (see the module
        docstring); raises :class:`UsageWriteError` when it will not be stored."""
        commit, loop = self._commit, self._loop
        if self._closed or commit is None or loop is None or not commit.thread.is_alive():
            raise UsageWriteError("usage writer is not running")
        try:
            params = _to_params(row)
        except Exception as exc:  # e.g. hops that cannot be encoded as JSON
            raise UsageWriteError("usage row cannot be encoded") from exc
        if commit.degraded and (waiting := commit.held + commit.queue.qsize()) >= self._max_held:
            commit.lose([params], "more rows than max_held already wait for the database")
            raise UsageWriteError(f"usage row not stored: {waiting} rows already wait for the database")
        fut: asyncio.Future[bool] = loop.create_future()
        fut.add_done_callback(retrieve)
        commit.queue.put((params, fut))
        if commit.degraded:
            return False  # the database is failing: the row waits in memory, the answer does not
        try:
            # Shielded: a caller cancelled or out of patience leaves its row queued; it is still written.
            return await asyncio.wait_for(asyncio.shield(fut), self._ack_timeout)
        except TimeoutError:
            commit.degraded = True  # the next callers do not wait either, until a commit succeeds again
            return False

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
        """Aggregates over all rows: ``requests``, ``errors`` (status >= 400 but :data:`STOPPED`), ``stopped`` and
        token sums (of valid counts: see :func:`~minigate.gateway.storage.sql.count_sum`)."""
        c = _USAGE.c
        stmt = select(
            func.count().label("requests"),
            func.coalesce(func.sum(case(((c.status >= 400) & (c.status != STOPPED), 1), else_=0)), 0).label("errors"),
            func.coalesce(func.sum(case((c.status == STOPPED, 1), else_=0)), 0).label("stopped"),
            count_sum(c.prompt_tokens, MAX_TOKENS).label("prompt_tokens"),
            count_sum(c.completion_tokens, MAX_TOKENS).label("completion_tokens"),
            count_sum(c.total_tokens, MAX_TOTAL).label("total_tokens"),
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().one()
        return {k: int(v) for k, v in row.items()}

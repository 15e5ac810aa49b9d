"""The audit log: every admin action (web UI, admin API, CLI), who did it, what, when and how it ended.

:meth:`AuditLog.note` hands an entry to a background task that inserts it (the request does not wait for the
database); :meth:`AuditLog.write` inserts at once (the CLI, which exits right after). :func:`safe_details` keeps
field names and only the values that cannot be secrets. Rows are kept (there is no pruning, as for usage rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

import msgspec
from sqlalchemy import Table, insert, select

from minigate.gateway.storage.db import Database
from minigate.gateway.storage.tables import AuditRow, utcnow

__all__ = ["AuditEntry", "AuditLog", "safe_details"]

log = logging.getLogger(__name__)

_AUDIT = cast(Table, AuditRow.__table__)
_INT64 = 2**63 - 1
# Names whose values are never stored: passwords, keys, tokens (``key_id`` and ``keys`` are not secrets).
_SECRET = re.compile(r"pass|secret|token(?!s)|csrf|credential|authori[sz]|cookie|(^|_)key$|api_?key", re.I)
_KEY_LIKE = re.compile(r"mg-[A-Za-z0-9_-]{8,}")  # a minigate API key, whatever field it came in
_MAX_VALUE = 200
_MAX_DETAILS = 2000
_MAX_FIELDS = 40


class AuditEntry(msgspec.Struct, kw_only=True):
    """One admin action as stored in ``audit_log`` (all columns but ``id``)."""

    via: str  # "web", "api" or "cli"
    actor: str  # who, in words: "alice", "key 3 (ops)", "admin key", "cli (root)"
    actor_kind: str  # "user", "key", "admin" (the admin password or the bootstrap key), "cli"
    action: str  # "POST /users/{user_id}/disable", "keys create", ...
    status: int  # the HTTP status it was answered with (the CLI: 200 done, 400 refused)
    target: str | None = None  # what it acted on: "user_id=3", a key's name, a model
    details: dict[str, Any] | None = None  # field names and safe values (see safe_details)
    key_id: int | None = None
    user_id: int | None = None
    client: str | None = None
    created_at: datetime = msgspec.field(default_factory=utcnow)


def _safe_value(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return "[key]" if _KEY_LIKE.search(value) else value[:_MAX_VALUE]
    if isinstance(value, Mapping) and depth < 2:
        return safe_details(value, depth + 1)
    if isinstance(value, list | tuple) and depth < 2:
        return [_safe_value(v, depth + 1) for v in value[:_MAX_FIELDS]]
    return "[set]"  # an upload, or nesting deeper than is worth keeping


def safe_details(fields: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """``fields`` with every name kept and secret-looking ones' values replaced by ``"[hidden]"``."""
    out: dict[str, Any] = {}
    for name, value in list(fields.items())[:_MAX_FIELDS]:
        name = str(name)[:64]
        out[name] = "[hidden]" if _SECRET.search(name) else _safe_value(value, depth)
    return out


def _params(entry: AuditEntry) -> dict[str, Any]:
    params = msgspec.structs.asdict(entry)
    for name, limit in (("actor", 200), ("action", 200), ("target", 200), ("client", 64), ("via", 8)):
        if params[name] is not None:
            params[name] = params[name][:limit]
    params["actor_kind"] = entry.actor_kind[:16]
    details = None
    if entry.details:
        details = msgspec.json.encode(entry.details).decode()
        if len(details) > _MAX_DETAILS:  # cut whole: a half JSON object would not decode
            details = msgspec.json.encode({"fields": list(entry.details)[:_MAX_FIELDS], "cut": True}).decode()
    params["details"] = details
    return params


class AuditLog:
    """Audit rows of one database: written in the background (:meth:`note`) or at once (:meth:`write`), read
    newest first (:meth:`page`)."""

    def __init__(self, database: Database, *, max_waiting: int = 10_000) -> None:
        """Rows for ``database``; at most ``max_waiting`` wait for it (more are logged and dropped)."""
        self._db = database
        self._queue: asyncio.Queue[AuditEntry] = asyncio.Queue(max_waiting)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0

    def start(self) -> None:
        """Start the background writer (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def note(self, entry: AuditEntry) -> None:
        """Queue ``entry`` for the background writer; never waits, never raises."""
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("audit row dropped (the database is behind): %s", msgspec.json.encode(_params(entry)).decode())

    async def write(self, *entries: AuditEntry) -> None:
        """Insert ``entries`` now."""
        if entries:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(_AUDIT), [_params(e) for e in entries])

    async def _run(self) -> None:
        while not self._closing:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 200:
                batch.append(self._queue.get_nowait())
            try:
                await self._store(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _store(self, batch: list[AuditEntry]) -> None:
        for attempt in range(5):  # a few tries over a second or two; then the rows go to the log instead
            try:
                await self.write(*batch)
                return
            except Exception as exc:
                if attempt == 4:
                    for entry in batch:
                        log.error("audit row not stored (%r): %s", exc, msgspec.json.encode(_params(entry)).decode())
                    return
                await asyncio.sleep(0.1 * 2**attempt)

    async def flush(self) -> None:
        """Return once every row queued so far is stored (tests, and :meth:`close`)."""
        if self._task is not None and not self._task.done():
            await self._queue.join()
            return
        batch: list[AuditEntry] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
            self._queue.task_done()
        await self._store(batch)

    async def close(self) -> None:
        """Store what is queued, then stop the background writer."""
        await self.flush()
        self._closing = True
        if self._task is not None:
            self._task.cancel()  # it waits for a row that will not come: nothing is in hand
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()  # rows noted meanwhile

    async def page(
        self, *, actor: str = "", action: str = "", limit: int = 50, before: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest rows (``before``: with a smaller id), filtered by ``actor`` (exact) and ``action``
        (contains), as dicts with ``details`` decoded."""
        c = _AUDIT.c
        stmt = select(_AUDIT)
        if actor:
            stmt = stmt.where(c.actor == actor[:200])
        if action:
            stmt = stmt.where(c.action.contains(action[:200], autoescape=True))
        if before is not None:
            stmt = stmt.where(c.id < min(max(before, -_INT64), _INT64))
        stmt = stmt.order_by(c.id.desc()).limit(max(1, min(limit, 500)))
        async with self._db.engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(stmt)).mappings()]
        for row in rows:
            try:
                row["details"] = msgspec.json.decode(row["details"]) if row["details"] else None
            except msgspec.DecodeError:
                row["details"] = None
        return rows

    async def actors(self) -> list[str]:
        """Every actor in the log, for the page's filter."""
        async with self._db.engine.connect() as conn:
            found = await conn.execute(select(_AUDIT.c.actor).distinct().order_by(_AUDIT.c.actor).limit(500))
            return [str(a) for a in found.scalars()]

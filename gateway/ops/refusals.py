"""Refused requests (401, 403, 429 answered before any upstream) as usage rows, coalesced so a flood stays small.

:meth:`Refusals.note` costs one dict update on the request path: requests alike in status, error code, key,
client address, endpoint and model asked within one UTC minute become one row whose ``refused`` column counts
them. A minute holds at most ``max_entries`` distinct ones; the rest of that minute is counted in one overflow row
per status (code ``refused_overflow``). A task stores the minutes that have ended, every few seconds, through the
usage writer; closing stores the current one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from minigate.gateway.storage.usage import UsageRecord, UsageWriter

__all__ = ["OVERFLOW", "REFUSED_STATUSES", "Refusals"]

log = logging.getLogger(__name__)

REFUSED_STATUSES = frozenset({401, 403, 429})
OVERFLOW = "refused_overflow"
_MAX_MODEL = 200  # the model name as the client asked: bounded here, so a map entry is small
_MAX_WINDOWS = 3  # minutes kept while the writer is behind; older ones are dropped (and counted in ``lost``)

_Key = tuple[int, str | None, int | None, str | None, str, str | None]  # status, code, key, client, endpoint, model


class Refusals:
    """The refused requests of the current and recent minutes, waiting to be stored."""

    def __init__(self, *, max_entries: int = 1000, clock: Callable[[], float] = time.time) -> None:
        """At most ``max_entries`` distinct rows per minute (then one overflow row per status)."""
        self.max_entries = max_entries
        self._clock = clock
        self._windows: dict[int, dict[_Key, list[float]]] = {}  # minute -> key -> [count, first seen]
        self._writer: UsageWriter | None = None
        self._user_of: Callable[[int | None], int | None] = lambda key_id: None
        self._task: asyncio.Task[None] | None = None
        self.lost = 0  # refused requests dropped while the writer was too far behind

    def note(
        self, status: int, code: str | None, key_id: int | None, client: str | None, endpoint: str, model: str | None
    ) -> None:
        """Count one refused request."""
        now = self._clock()
        minute = int(now // 60)
        window = self._windows.get(minute)
        if window is None:
            window = self._windows[minute] = {}
            while len(self._windows) > _MAX_WINDOWS:
                oldest = min(self._windows)
                self.lost += int(sum(entry[0] for entry in self._windows.pop(oldest).values()))
        key: _Key = (status, code, key_id, client, endpoint, model[:_MAX_MODEL] if model else None)
        entry = window.get(key)
        if entry is None:
            if len(window) >= self.max_entries:
                key = (status, OVERFLOW, None, None, "", None)
                entry = window.get(key)
            if entry is None:
                entry = window[key] = [0, now]
        entry[0] += 1

    def start(self, writer: UsageWriter, user_of: Callable[[int | None], int | None], every: float = 5.0) -> None:
        """Store through ``writer`` (``user_of``: the person of a key id) every ``every`` seconds."""
        self._writer, self._user_of = writer, user_of
        if self._task is None:
            self._task = asyncio.create_task(self._run(every))

    async def _run(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush()
            except Exception:
                log.exception("refused requests were not stored")

    def _rows(self, minute: int, window: dict[_Key, list[float]]) -> list[UsageRecord]:
        rows = []
        for n, ((status, code, key_id, client, endpoint, model), (count, first)) in enumerate(window.items()):
            rows.append(
                UsageRecord(
                    request_id=f"refused-{minute}-{n}",
                    endpoint=endpoint or "other",
                    requested_model=model or "",
                    status=status,
                    latency_ms=0.0,
                    created_at=datetime.fromtimestamp(first, UTC),
                    key_id=key_id,
                    user_id=self._user_of(key_id) if key_id is not None else None,
                    error=code,
                    refused=int(count),
                    client=client,
                )
            )
        return rows

    async def flush(self, everything: bool = False) -> int:
        """Store the minutes that have ended (``everything``: the current one too); returns the rows stored."""
        writer = self._writer
        if writer is None:
            return 0
        current = int(self._clock() // 60)
        done = [m for m in sorted(self._windows) if everything or m < current]
        rows = [row for m in done for row in self._rows(m, self._windows.pop(m))]
        results = await asyncio.gather(*(writer.record(row) for row in rows), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):  # the writer logged the row already when the database was to blame
                log.error("a row of refused requests was not stored: %s", result)
        return len(rows)

    async def close(self) -> None:
        """Stop the task and store everything counted."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush(everything=True)

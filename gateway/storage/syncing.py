"""What the stores that share a view through the database have in common: a sync now, then one every interval."""

from __future__ import annotations

import abc
import asyncio
import contextlib

__all__ = ["PeriodicSync"]


class PeriodicSync(abc.ABC):
    """A replica's in-memory view, shared through the database by :meth:`sync` every ``interval`` seconds.

    :meth:`start` syncs once and then in the background; :meth:`stop_syncing` ends the background task (a
    subclass's ``close`` then writes what is still pending).
    """

    def __init__(self, interval: float, name: str) -> None:
        """Sync every ``interval`` seconds in a task called ``name``."""
        self._interval = interval
        self._task_name = name
        self._task: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def sync(self) -> bool:
        """Write what this replica noted, read what every replica wrote; False when the database failed."""

    async def start(self) -> None:
        """Read the database once, then keep syncing in the background (idempotent)."""
        if self._task is None:
            await self.sync()
            self._task = asyncio.create_task(self._run(), name=self._task_name)

    async def stop_syncing(self) -> None:
        """End the background syncing (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.sync()

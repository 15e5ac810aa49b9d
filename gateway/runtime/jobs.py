"""Long admin operations (model pulls and imports) run as jobs whose progress any worker or replica can read.

The process running a job keeps it in the database (:class:`~minigate.gateway.storage.jobs.JobStore`): new
progress at most every ``every`` seconds, a heartbeat every ``beat`` seconds without any, the outcome at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from minigate.gateway.storage.jobs import STOPPED, Job, JobStore
from minigate.providers.base import ProviderError

__all__ = ["Job", "JobBoard"]

log = logging.getLogger("minigate")


class JobBoard:
    """This process's running jobs, written through ``store``; reads answer from the database."""

    def __init__(self, store: JobStore, *, every: float = 0.5, beat: float = 5.0) -> None:
        """Write a job's new progress at most every ``every`` seconds, and a heartbeat every ``beat`` seconds
        (well inside the store's ``stale_after``)."""
        self._store = store
        self._every = every
        self._beat = beat
        self._tasks: dict[asyncio.Task[None], Job] = {}

    async def start(
        self,
        kind: str,
        target: str,
        work: Callable[[Callable[[str], None]], Awaitable[Any]],
        then: Callable[[], None] | None = None,
    ) -> Job:
        """Store a new job and run ``work(progress)`` in the background; ``then`` runs after it succeeds."""
        job = await self._store.create(kind, target)

        async def run() -> None:
            ended = asyncio.Event()
            writer = asyncio.create_task(self._keep_saved(job, ended), name=f"job-{job.id}-writer")
            try:
                await work(job.note)
                if then is not None:
                    then()
                job.state = "done"
            except ProviderError as err:
                job.state, job.error, job.status = "failed", err.message, err.status
            except Exception as err:
                log.exception("job %s %s failed", kind, target)
                job.state, job.error, job.status = "failed", f"{type(err).__name__}: {err}", 500
            except asyncio.CancelledError:
                job.state, job.error, job.status = "failed", STOPPED, 503
                raise
            finally:
                job.finished = time.time()
                ended.set()
                await writer  # the last write is the outcome

        task = asyncio.create_task(run(), name=f"job-{job.id}")
        self._tasks[task] = job
        task.add_done_callback(lambda done: self._tasks.pop(done, None))
        return job

    async def _keep_saved(self, job: Job, ended: asyncio.Event) -> None:
        saved, beat_at, failures = 0, time.monotonic(), 0
        while True:
            if not ended.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), self._every)
            last = ended.is_set()
            if last or job.changes != saved or time.monotonic() - beat_at >= self._beat:
                saved, beat_at = job.changes, time.monotonic()
                try:
                    await self._store.save(job)
                    failures = 0
                except Exception as exc:  # the job goes on; the next write tries again
                    if not failures:
                        log.warning("could not store job %s (retrying): %r", job.id, exc)
                    failures += 1
                    if last and failures < 5:
                        await asyncio.sleep(self._every)
                        continue
            if last:
                return

    async def get(self, job_id: int) -> Job | None:
        """A job by id, from the database (whichever process runs it)."""
        return await self._store.get(job_id)

    async def all(self) -> list[Job]:
        """The jobs kept, newest first, from the database."""
        return await self._store.recent()

    async def close(self) -> None:
        """Cancel running jobs (their child processes are stopped by the provider); each stores that it stopped."""
        running = dict(self._tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for job in running.values():
            if job.finished is None:  # cancelled before it began: its task never ran to store the outcome
                job.state, job.error, job.status, job.finished = "failed", STOPPED, 503, time.time()
                with contextlib.suppress(Exception):
                    await self._store.save(job)

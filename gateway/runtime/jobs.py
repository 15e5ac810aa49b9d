"""Long admin operations (model pulls and imports) run as jobs whose progress can be read while they run."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from minigate.providers.base import ProviderError

__all__ = ["Job", "JobBoard"]

log = logging.getLogger("minigate")


@dataclass(slots=True)
class Job:
    """One operation: its state (``running``, ``done``, ``failed``) and its last progress lines."""

    id: int
    kind: str
    target: str
    state: str = "running"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    status: int | None = None  # HTTP-like status of a failure (400 refused input, 501 tools missing, ...)
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=40))

    def view(self) -> dict[str, Any]:
        """The job as JSON for the admin API and pages."""
        return {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "state": self.state,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "status": self.status,
            "progress": list(self.lines),
        }


class JobBoard:
    """The gateway's jobs; finished ones are kept (the newest ``keep``) so their outcome can be read."""

    def __init__(self, keep: int = 50) -> None:
        self._jobs: dict[int, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._keep = keep

    def start(
        self,
        kind: str,
        target: str,
        work: Callable[[Callable[[str], None]], Awaitable[Any]],
        then: Callable[[], None] | None = None,
    ) -> Job:
        """Run ``work(progress)`` in the background; ``then`` runs after it succeeds."""
        job = Job(next(self._ids), kind, target)
        self._jobs[job.id] = job

        async def run() -> None:
            try:
                await work(job.lines.append)
                if then is not None:
                    then()
                job.state = "done"
            except ProviderError as err:
                job.state, job.error, job.status = "failed", err.message, err.status
            except Exception as err:
                log.exception("job %s %s failed", kind, target)
                job.state, job.error, job.status = "failed", f"{type(err).__name__}: {err}", 500
            finally:
                job.finished = time.time()
                self._prune()

        task = asyncio.create_task(run(), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def get(self, job_id: int) -> Job | None:
        """A job by id."""
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        """Every job kept, newest first."""
        return sorted(self._jobs.values(), key=lambda j: j.id, reverse=True)

    def _prune(self) -> None:
        done = [j for j in self.all() if j.state != "running"]
        for job in done[self._keep :]:
            del self._jobs[job.id]

    async def close(self) -> None:
        """Cancel running jobs (their child processes are stopped by the provider)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

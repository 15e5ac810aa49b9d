"""Admin jobs (model pulls and imports) in the ``jobs`` table, so every worker and replica reads the same ones.

The process running a job writes its state, last progress lines and a heartbeat (``beat_epoch``); a running job
whose heartbeat is older than ``stale_after`` is read as failed: the process running it died.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import BigInteger, Float, Integer, Row, Table, and_, delete, insert, not_, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column

from minigate.gateway.storage.db import Database
from minigate.gateway.storage.tables import Base, SafeString, SafeText

__all__ = ["INTERRUPTED", "STOPPED", "Job", "JobRow", "JobStore"]

LINES = 40  # progress lines kept per job
_LINE = 1000  # characters kept per progress line
STOPPED = "Interrupted: the gateway stopped while the job ran."
INTERRUPTED = "Interrupted: the gateway process running the job stopped before it finished."


class JobRow(Base):
    """One job: what it does, its state, its last progress lines (JSON) and its runner's last sign of life."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(SafeString(16))  # "pull" | "import"
    target: Mapped[str] = mapped_column(SafeText)  # "provider/model" as asked
    state: Mapped[str] = mapped_column(SafeString(16))  # "running" | "done" | "failed"
    started_epoch: Mapped[float] = mapped_column(Float)
    finished_epoch: Mapped[float | None] = mapped_column(Float)
    beat_epoch: Mapped[float] = mapped_column(Float)  # the running process's last write
    error: Mapped[str | None] = mapped_column(SafeText)
    status: Mapped[int | None] = mapped_column(Integer)  # HTTP-like status of a failure
    progress: Mapped[str] = mapped_column(SafeText)  # JSON list of the last progress lines


_JOBS = cast(Table, JobRow.__table__)


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
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=LINES))
    changes: int = 0  # progress lines noted so far (the runner writes when this moved)

    def note(self, line: str) -> None:
        """One progress line."""
        self.lines.append(line[:_LINE])
        self.changes += 1

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


class JobStore:
    """The ``jobs`` table: the newest ``keep`` jobs, none older than ``max_age`` seconds (running ones kept)."""

    def __init__(
        self,
        database: Database,
        *,
        keep: int = 100,
        max_age: float = 7 * 86_400.0,
        stale_after: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """A running job whose heartbeat is older than ``stale_after`` seconds reads as failed."""
        self._db = database
        self._keep = keep
        self._max_age = max_age
        self._stale_after = stale_after
        self._clock = clock

    async def create(self, kind: str, target: str) -> Job:
        """A new running job, its id from the database (unique across processes); old jobs are pruned."""
        now = self._clock()
        values = {
            "kind": kind[:16],
            "target": target,
            "state": "running",
            "started_epoch": now,
            "beat_epoch": now,
            "progress": "[]",
        }
        async with self._db.engine.begin() as conn:
            job_id = (await conn.execute(insert(_JOBS).values(**values).returning(_JOBS.c.id))).scalar_one()
        async with self._db.engine.begin() as conn:
            await conn.execute(self._prune(now))
        return Job(int(job_id), kind, target, started=now)

    async def save(self, job: Job) -> None:
        """Write ``job``'s state and progress lines; the write is also its heartbeat."""
        values = {
            "state": job.state,
            "finished_epoch": job.finished,
            "error": job.error,
            "status": job.status,
            "progress": json.dumps(list(job.lines)),
            "beat_epoch": self._clock(),
        }
        async with self._db.engine.begin() as conn:
            await conn.execute(update(_JOBS).where(_JOBS.c.id == job.id).values(**values))

    async def get(self, job_id: int) -> Job | None:
        """A job by id, as the database has it (None for an id no 64-bit column can hold)."""
        if not 0 < job_id < 2**63:
            return None
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(_JOBS).where(_JOBS.c.id == job_id))).first()
        return None if row is None else self._job(row)

    async def recent(self) -> list[Job]:
        """The newest ``keep`` jobs, newest first."""
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(select(_JOBS).order_by(_JOBS.c.id.desc()).limit(self._keep))).all()
        return [self._job(row) for row in rows]

    def _prune(self, now: float) -> Any:
        c = _JOBS.c
        alive = and_(c.state == "running", c.beat_epoch >= now - self._stale_after)
        newest = select(c.id).order_by(c.id.desc()).offset(self._keep - 1).limit(1).scalar_subquery()
        return delete(_JOBS).where(or_(c.id < newest, c.started_epoch < now - self._max_age), not_(alive))

    def _job(self, row: Row[Any]) -> Job:
        lines: deque[str] = deque((str(line) for line in json.loads(row.progress or "[]")), maxlen=LINES)
        job = Job(
            int(row.id),
            row.kind,
            row.target,
            row.state,
            float(row.started_epoch),
            row.finished_epoch,
            row.error,
            row.status,
            lines,
        )
        if job.state == "running" and row.beat_epoch < self._clock() - self._stale_after:
            job.state, job.error, job.status, job.finished = "failed", INTERRUPTED, 500, float(row.beat_epoch)
        return job

"""Cooldowns shared by every replica of one database, with no database round trip per request.

The request path reads a view held in memory; a background task writes what happened and re-reads the
``cooldowns`` table once a second, with single atomic statements (docs/architecture.md, "Cooldowns").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Float, Integer, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from minigate.gateway.storage.db import Database
from minigate.gateway.storage.sql import greatest
from minigate.gateway.storage.syncing import PeriodicSync
from minigate.gateway.storage.tables import Base, SafeString, SafeText, UTCDateTime

__all__ = ["CooldownRow", "SharedCooldown", "SharedCooldowns"]

logger = logging.getLogger(__name__)

_MAX_REF = 300
_MAX_ERROR = 1000


class CooldownRow(Base):
    """A deployment that is cooling down, or was lately (its backoff level still counts)."""

    __tablename__ = "cooldowns"

    ref: Mapped[str] = mapped_column(SafeString(_MAX_REF), primary_key=True)  # "provider/model"
    until_epoch: Mapped[float] = mapped_column(Float)  # wall-clock end of the cooldown
    level: Mapped[int] = mapped_column(Integer)  # cooldowns in a row so far (the backoff doubles with each)
    last_error: Mapped[str | None] = mapped_column(SafeText)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())  # when the replica saw the failure


_TABLE = cast(Table, CooldownRow.__table__)


@dataclass(frozen=True, slots=True)
class SharedCooldown:
    """A deployment's shared state: cooling until ``until`` (wall clock), after ``level`` cooldowns in a row."""

    until: float
    level: int
    last_error: str | None
    updated: float  # wall-clock time of the event that set it


@dataclass(frozen=True, slots=True)
class _Recovered:
    at: float


_Note = SharedCooldown | _Recovered


class SharedCooldowns(PeriodicSync):
    """The shared view of cooldowns for one replica; see the module docstring.

    Call :meth:`start` once the database is open and :meth:`close` before closing it. Everything else is
    synchronous, cheap, and safe to call on every request.
    """

    def __init__(
        self,
        database: Database,
        *,
        interval: float = 1.0,
        forget_after: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Share through ``database``, syncing every ``interval`` seconds.

        Rows whose cooldown ended more than ``forget_after`` seconds ago are deleted (their deployment was not
        tried since, e.g. it left the config). ``clock`` is the wall clock (tests replace it).
        """
        super().__init__(interval, "shared-cooldowns")
        self._db = database
        self._forget_after = forget_after
        self._clock = clock
        self._view: dict[str, SharedCooldown] = {}
        self._notes: dict[str, _Note] = {}  # written at the next sync
        self._failing = False  # the last sync failed (logged once until one succeeds)
        self.last_sync: float | None = None  # wall-clock time of the last successful sync

    # The request path: memory only.

    def get(self, ref: str) -> SharedCooldown | None:
        """What the replicas know about ``ref`` (as of the last sync, plus this replica's own notes)."""
        return self._view.get(ref)

    def cooling(self, ref: str) -> float:
        """Seconds ``ref`` still cools down according to any replica (0.0 when it may be tried)."""
        state = self._view.get(ref)
        return 0.0 if state is None else max(0.0, state.until - self._clock())

    def level(self, ref: str) -> int:
        """How many cooldowns in a row ``ref`` has had, across replicas (0 after a success)."""
        state = self._view.get(ref)
        return 0 if state is None else state.level

    def cooled(self, ref: str, seconds: float, level: int, error: str | None = None) -> None:
        """This replica put ``ref`` on cooldown for ``seconds`` at backoff ``level``; share it."""
        if len(ref) > _MAX_REF or seconds <= 0:
            return
        now = self._clock()
        note = SharedCooldown(now + seconds, level, None if error is None else error[:_MAX_ERROR], now)
        pending = self._notes.get(ref)
        if isinstance(pending, SharedCooldown):
            note = _merge(pending, note)
        self._notes[ref] = note
        seen = self._view.get(ref)
        self._view[ref] = note if seen is None else _merge(seen, note)

    def recovered(self, ref: str) -> None:
        """``ref`` answered on this replica: end its shared backoff (unless a later cooldown was shared since)."""
        if ref not in self._view and ref not in self._notes:
            return  # nothing shared about it: the common case costs one dict lookup
        now = self._clock()
        self._notes[ref] = _Recovered(now)
        seen = self._view.get(ref)
        if seen is not None and seen.updated <= now:
            del self._view[ref]

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Every deployment the replicas share something about: remaining cooldown, level, last error."""
        now = self._clock()
        return {
            ref: {"cooldown_s": round(max(0.0, s.until - now), 3), "level": s.level, "last_error": s.last_error}
            for ref, s in self._view.items()
        }

    # The background half.

    async def close(self) -> None:
        """Stop syncing, after writing what is still noted."""
        await self.stop_syncing()
        if self._notes:
            await self.sync()

    async def sync(self) -> bool:
        """Write the notes and re-read the table, in one transaction; False (and the notes kept) on failure."""
        notes, self._notes = self._notes, {}
        now = self._clock()
        try:
            async with self._db.engine.begin() as conn:
                for ref, note in notes.items():
                    await self._write(conn, ref, note)
                await conn.execute(delete(_TABLE).where(_TABLE.c.until_epoch < now - self._forget_after))
                rows = (await conn.execute(select(_TABLE))).all()
        except Exception as exc:
            for ref, note in notes.items():  # retried at the next sync, unless something newer was noted
                self._notes.setdefault(ref, note)
            if not self._failing:
                logger.warning(
                    "could not share cooldowns through the database (retrying every %ss): %r", self._interval, exc
                )
            self._failing = True
            return False
        if self._failing:
            logger.info("sharing cooldowns through the database again")
        self._failing = False
        view = {
            str(r.ref): SharedCooldown(float(r.until_epoch), int(r.level), r.last_error, r.updated_at.timestamp())
            for r in rows
        }
        # Notes made while the transaction ran are not in the rows yet: keep them visible.
        for ref, note in self._notes.items():
            if isinstance(note, SharedCooldown):
                seen = view.get(ref)
                view[ref] = note if seen is None else _merge(seen, note)
            elif ref in view and view[ref].updated <= note.at:
                del view[ref]
        self._view = view
        self.last_sync = now
        return True

    async def _write(self, conn: AsyncConnection, ref: str, note: _Note) -> None:
        c = _TABLE.c
        if isinstance(note, _Recovered):
            await conn.execute(delete(_TABLE).where(c.ref == ref, c.updated_at <= _utc(note.at)))
            return
        values: dict[str, Any] = {
            "ref": ref,
            "until_epoch": note.until,
            "level": note.level,
            "last_error": note.last_error,
            "updated_at": _utc(note.updated),
        }
        dialect = conn.dialect.name
        if dialect == "postgresql":
            pg = postgresql.insert(_TABLE).values(**values)
            stmt: Any = pg.on_conflict_do_update(index_elements=[c.ref], set_=_merged_columns(pg.excluded))
        elif dialect == "sqlite":
            lite = sqlite.insert(_TABLE).values(**values)
            stmt = lite.on_conflict_do_update(index_elements=[c.ref], set_=_merged_columns(lite.excluded))
        else:
            raise NotImplementedError(f"shared cooldowns need SQLite or PostgreSQL, not {dialect}")
        await conn.execute(stmt)


def _merged_columns(excluded: Any) -> dict[str, Any]:
    """The upsert's SET: the later end and the higher level win; the newest error and time are kept."""
    c = _TABLE.c
    return {
        "until_epoch": greatest(c.until_epoch, excluded.until_epoch),
        "level": greatest(c.level, excluded.level),
        "last_error": excluded.last_error,
        "updated_at": greatest(c.updated_at, excluded.updated_at),
    }


def _merge(a: SharedCooldown, b: SharedCooldown) -> SharedCooldown:
    newer = b if b.updated >= a.updated else a
    return SharedCooldown(max(a.until, b.until), max(a.level, b.level), newer.last_error, newer.updated)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)

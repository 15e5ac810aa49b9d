"""What each API key used, per fixed window, shared by every replica of one database with no round trip per request.

The request path reads and grows a view held in memory; a background task adds this replica's growth to the
``key_counters`` rows with atomic upserts, refreshes its ``key_leases`` rows (calls in flight) and re-reads both,
once per ``interval`` (docs/architecture.md, "Key limits and budgets").
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import BigInteger, Float, Integer, Table, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from minigate.gateway.storage.db import Database
from minigate.gateway.storage.sql import upsert
from minigate.gateway.storage.syncing import PeriodicSync
from minigate.gateway.storage.tables import Base, SafeString

__all__ = ["KeyCounterRow", "KeyLeaseRow", "SharedCounters", "Window"]

logger = logging.getLogger(__name__)

Window = tuple[int, str]  # (key id, period such as "m:29496240", "d:2026-12-06", "M:2026-12")


class KeyCounterRow(Base):
    """What one key used in one fixed window (UTC): requests, tokens, US dollars."""

    __tablename__ = "key_counters"

    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[str] = mapped_column(SafeString(24), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[float] = mapped_column(Float)
    ends_epoch: Mapped[float] = mapped_column(Float)  # wall-clock end of the window; the row is dropped after it


class KeyLeaseRow(Base):
    """The calls one replica has in flight for one key, valid until ``until_epoch`` unless refreshed."""

    __tablename__ = "key_leases"

    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    replica: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    in_flight: Mapped[int] = mapped_column(Integer)
    until_epoch: Mapped[float] = mapped_column(Float)


_COUNTERS = cast(Table, KeyCounterRow.__table__)
_LEASES = cast(Table, KeyLeaseRow.__table__)


class SharedCounters(PeriodicSync):
    """Counters and in-flight calls per key for one replica; see the module docstring.

    Call :meth:`start` once the database is open and :meth:`close` before closing it. Everything else is
    synchronous and safe to call on every request. ``view`` maps a window to ``[requests, tokens, cost]``: the
    database's totals as of the last sync plus what this replica added since.
    """

    def __init__(
        self,
        database: Database,
        *,
        interval: float = 1.0,
        lease_for: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Share through ``database`` every ``interval`` seconds; a replica's leases count for ``lease_for`` seconds
        after its last sync (a replica that died stops holding its key's concurrency slots then)."""
        super().__init__(interval, "key-counters")
        self._db = database
        self._lease_for = lease_for
        self._clock = clock
        self.replica = secrets.token_hex(8)
        self.view: dict[Window, list[float]] = {}
        self._pending: dict[Window, list[float]] = {}  # [requests, tokens, cost, ends] added since the last sync
        self._flight: dict[int, int] = {}  # key id -> this replica's calls in flight
        self._others: dict[int, int] = {}  # key id -> the other replicas' calls in flight, as of the last sync
        self._leased: set[int] = set()  # keys this replica has a lease row for
        self._failing = False
        self.last_sync: float | None = None

    # The request path: memory only.

    def add(self, window: Window, ends: float, requests: int, tokens: int, cost: float) -> None:
        """Count ``requests``, ``tokens`` and ``cost`` in ``window`` (which ends at wall-clock ``ends``)."""
        seen = self.view.get(window)
        if seen is None:
            self.view[window] = [requests, tokens, cost]
        else:
            seen[0] += requests
            seen[1] += tokens
            seen[2] += cost
        pending = self._pending.get(window)
        if pending is None:
            self._pending[window] = [requests, tokens, cost, ends]
        else:
            pending[0] += requests
            pending[1] += tokens
            pending[2] += cost

    def in_flight(self, key_id: int) -> int:
        """Calls in flight for ``key_id`` on every replica (the others' as of the last sync)."""
        return self._flight.get(key_id, 0) + self._others.get(key_id, 0)

    def enter(self, key_id: int) -> None:
        """A call of ``key_id`` started on this replica."""
        self._flight[key_id] = self._flight.get(key_id, 0) + 1

    def leave(self, key_id: int) -> None:
        """A call of ``key_id`` ended on this replica."""
        left = self._flight.get(key_id, 0) - 1
        if left > 0:
            self._flight[key_id] = left
        else:
            self._flight.pop(key_id, None)

    # The background half.

    async def close(self) -> None:
        """Stop syncing, after writing what is still pending and dropping this replica's leases."""
        await self.stop_syncing()
        self._flight.clear()
        with contextlib.suppress(Exception):
            await self.sync()

    async def sync(self) -> bool:
        """Add the pending counts, refresh the leases and re-read both tables in one transaction; False (the
        counts kept for the next try) on failure."""
        pending, self._pending = self._pending, {}
        flight = dict(self._flight)
        now = self._clock()
        try:
            async with self._db.engine.begin() as conn:
                for (key_id, period), (requests, tokens, cost, ends) in pending.items():
                    values = {
                        "key_id": key_id,
                        "period": period,
                        "requests": int(requests),
                        "tokens": int(tokens),
                        "cost": float(cost),
                        "ends_epoch": ends,
                    }
                    await upsert(conn, _COUNTERS, values, ["key_id", "period"], _added)
                await self._write_leases(conn, flight, now)
                await conn.execute(delete(_COUNTERS).where(_COUNTERS.c.ends_epoch < now - 120))
                await conn.execute(delete(_LEASES).where(_LEASES.c.until_epoch < now))
                c = _COUNTERS.c
                rows = (
                    await conn.execute(
                        select(c.key_id, c.period, c.requests, c.tokens, c.cost).where(c.ends_epoch > now)
                    )
                ).all()
                lc = _LEASES.c
                leases = (
                    await conn.execute(
                        select(lc.key_id, lc.in_flight).where(lc.replica != self.replica, lc.until_epoch >= now)
                    )
                ).all()
        except Exception as exc:
            for window, counts in pending.items():  # added again at the next sync
                mine = self._pending.setdefault(window, [0, 0, 0.0, counts[3]])
                mine[0] += counts[0]
                mine[1] += counts[1]
                mine[2] += counts[2]
            if not self._failing:
                logger.warning("could not share key counters through the database (retrying): %r", exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("sharing key counters through the database again")
        self._failing = False
        view: dict[Window, list[float]] = {
            (int(r.key_id), str(r.period)): [int(r.requests), int(r.tokens), float(r.cost)] for r in rows
        }
        for window, counts in self._pending.items():  # counted while the transaction ran: not in the rows yet
            seen = view.setdefault(window, [0, 0, 0.0])
            seen[0] += counts[0]
            seen[1] += counts[1]
            seen[2] += counts[2]
        others: dict[int, int] = {}
        for key_id, in_flight in leases:
            others[int(key_id)] = others.get(int(key_id), 0) + int(in_flight)
        self.view, self._others = view, others
        self.last_sync = now
        return True

    async def _write_leases(self, conn: AsyncConnection, flight: dict[int, int], now: float) -> None:
        gone = self._leased - flight.keys()
        if gone:
            lc = _LEASES.c
            await conn.execute(delete(_LEASES).where(lc.replica == self.replica, lc.key_id.in_(sorted(gone))))
        for key_id, count in flight.items():
            values = {
                "key_id": key_id,
                "replica": self.replica,
                "in_flight": count,
                "until_epoch": now + self._lease_for,
            }
            await upsert(conn, _LEASES, values, ["key_id", "replica"], _replaced)
        self._leased = set(flight)


def _added(excluded: Any) -> dict[str, Any]:
    c = _COUNTERS.c
    return {
        "requests": c.requests + excluded.requests,
        "tokens": c.tokens + excluded.tokens,
        "cost": c.cost + excluded.cost,
    }


def _replaced(excluded: Any) -> dict[str, Any]:
    return {"in_flight": excluded.in_flight, "until_epoch": excluded.until_epoch}

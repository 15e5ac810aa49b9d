"""Login throttling in the ``login_failures`` table, so every worker and replica counts the same failures.

A failed attempt is one atomic upsert per counter (an address, or the one shared by forwarded attempts), the check
one read by primary key, a success deletes its address's row; rows whose window ended are pruned by time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Float, Integer, Table, case, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from minigate.gateway.storage.db import Database
from minigate.gateway.storage.sql import upsert
from minigate.gateway.storage.tables import Base, SafeString

__all__ = ["LoginFailureRow", "LoginThrottle"]

_ADDRESS = 128


class LoginFailureRow(Base):
    """The failed logins of one address (or counter) since the first failure of its window."""

    __tablename__ = "login_failures"

    address: Mapped[str] = mapped_column(SafeString(_ADDRESS), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    since_epoch: Mapped[float] = mapped_column(Float, index=True)  # wall-clock time of the window's first failure


_TABLE = cast(Table, LoginFailureRow.__table__)


class LoginThrottle:
    """Refuses logins from an address after ``limit`` failures within ``window`` seconds of its first failure."""

    def __init__(
        self, database: Database, *, limit: int = 10, window: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        """Count in ``database``; ``clock`` is the wall clock (tests replace it)."""
        self._db = database
        self.limit = limit
        self.window = window
        self._clock = clock

    async def blocked(self, addresses: Sequence[str]) -> bool:
        """True while any of ``addresses`` has used up its attempts."""
        c = _TABLE.c
        query = (
            select(c.address)
            .where(
                c.address.in_([_key(a) for a in addresses]),
                c.failures >= self.limit,
                c.since_epoch >= self._clock() - self.window,
            )
            .limit(1)
        )
        async with self._db.engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def failed(self, addresses: Sequence[str]) -> None:
        """Count one failed login against each of ``addresses`` (a window that ended starts again)."""
        now = self._clock()
        ended = _TABLE.c.since_epoch < now - self.window

        def counted(_: Any) -> dict[str, Any]:
            c = _TABLE.c
            return {
                "failures": case((ended, 1), else_=c.failures + 1),
                "since_epoch": case((ended, now), else_=c.since_epoch),
            }

        for address in addresses:  # a transaction each: one row lock at a time, so no deadlock between logins
            async with self._db.engine.begin() as conn:
                await upsert(
                    conn, _TABLE, {"address": _key(address), "failures": 1, "since_epoch": now}, ["address"], counted
                )
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(_TABLE).where(_TABLE.c.since_epoch < now - self.window))

    async def succeeded(self, address: str) -> None:
        """Forget the failures of an address that logged in."""
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(_TABLE).where(_TABLE.c.address == _key(address)))


def _key(address: str) -> str:
    return address[:_ADDRESS]

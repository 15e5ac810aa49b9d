"""Stored Responses API answers (the ``responses`` table): kept, read and deleted per API key, or per person when
the key belongs to one (any of their keys reaches them). Migration ``0005_responses`` creates the table.

:meth:`ResponseStore.keep` returns at once and writes in the background (one short transaction), so storing adds
nothing to the answer; until the write lands the response is served from memory, so it can be read back or
continued at once on this replica.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import msgspec
from sqlalchemy import ColumnElement, Table, delete, insert, select

from minigate.gateway.storage.db import Database
from minigate.gateway.storage.tables import ApiKeyRow, ResponseRow, utcnow

__all__ = ["ResponseStore", "StoredResponse"]

log = logging.getLogger("minigate")

_RESPONSES = cast(Table, ResponseRow.__table__)
_KEYS = cast(Table, ApiKeyRow.__table__)
_MAX_ID = 64  # the column's width: a longer id names no response


class StoredResponse(msgspec.Struct, kw_only=True):
    """One stored answer: its whole input (history first) and the Response object (its ``output`` included)."""

    id: str
    key_id: int | None
    input: list[dict[str, Any]]
    response: dict[str, Any]

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """What a response continuing this one starts from: its input, then its output."""
        output = self.response.get("output")
        return [*self.input, *(output if isinstance(output, list) else ())]


def _owned(response_id: str, key_id: int | None, user_id: int | None = None) -> list[ColumnElement[bool]]:
    column = _RESPONSES.c.key_id
    if user_id is not None:  # made with any key of the person's
        mine = select(_KEYS.c.id).where(_KEYS.c.user_id == user_id).scalar_subquery()
        return [_RESPONSES.c.id == response_id, column.in_(mine)]
    return [_RESPONSES.c.id == response_id, column.is_(None) if key_id is None else column == key_id]


class ResponseStore:
    """Responses of one API key (or one person) at a time: every query is scoped by ``key_id`` (None: the bootstrap
    key), or by ``user_id`` when given (the key's person)."""

    def __init__(self, database: Database) -> None:
        """Use ``database`` (migrated to at least ``0005``)."""
        self._db = database
        self._pending: dict[str, tuple[StoredResponse, asyncio.Task[None]]] = {}  # kept, not yet written

    def keep(self, key_id: int | None, items: list[dict[str, Any]], response: dict[str, Any]) -> None:
        """Store ``response`` (its ``id`` names it) made by ``key_id`` from the input ``items``, in the background;
        a failed write is logged (the response then cannot be read back or continued)."""
        stored = StoredResponse(id=response["id"], key_id=key_id, input=items, response=response)
        task = asyncio.ensure_future(self._write(stored))
        self._pending[stored.id] = (stored, task)
        task.add_done_callback(lambda _: self._pending.pop(stored.id, None))

    async def _write(self, stored: StoredResponse) -> None:
        try:
            await self.save(stored.key_id, stored.input, stored.response)
        except Exception:
            log.exception("response %s was not stored", stored.id, extra={"event": "response_not_stored"})

    async def save(self, key_id: int | None, items: list[dict[str, Any]], response: dict[str, Any]) -> None:
        """Write ``response`` made by ``key_id`` from the input ``items`` now, in one transaction."""
        row = {
            "id": response["id"],
            "key_id": key_id,
            "created_at": utcnow(),
            "previous_response_id": response.get("previous_response_id"),
            "input": msgspec.json.encode(items).decode(),
            "response": msgspec.json.encode(response).decode(),
        }
        async with self._db.engine.begin() as conn:
            await conn.execute(insert(_RESPONSES).values(**row))

    async def get(self, key_id: int | None, response_id: str, user_id: int | None = None) -> StoredResponse | None:
        """The key's (or the person ``user_id``'s) response of that id, or None (unknown, deleted, or someone
        else's)."""
        if len(response_id) > _MAX_ID:
            return None
        pending = self._pending.get(response_id)
        if pending is not None:
            return pending[0] if pending[0].key_id == key_id else None  # being written: this key's own only
        stmt = select(_RESPONSES.c.input, _RESPONSES.c.response).where(*_owned(response_id, key_id, user_id))
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return StoredResponse(
            id=response_id, key_id=key_id, input=msgspec.json.decode(row[0]), response=msgspec.json.decode(row[1])
        )

    async def delete(self, key_id: int | None, response_id: str, user_id: int | None = None) -> bool:
        """Delete the key's (or the person ``user_id``'s) response of that id; False when there is none."""
        if len(response_id) > _MAX_ID:
            return False
        pending = self._pending.get(response_id)
        if pending is not None:
            await asyncio.shield(pending[1])  # written first, so the write cannot bring it back
        async with self._db.engine.begin() as conn:
            deleted = await conn.execute(delete(_RESPONSES).where(*_owned(response_id, key_id, user_id)))
        return deleted.rowcount == 1

    async def close(self) -> None:
        """Wait for the writes under way (before the database closes)."""
        tasks = [task for _, task in self._pending.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

"""Finding an owner's conversations by title and by what their messages say (the chat sidebar's search)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, func, select

from minigate.gateway.storage.conversations import ConversationInfo, ConversationRow, MessageRow
from minigate.gateway.storage.db import Database

__all__ = ["search_conversations", "snippet"]

_CONV = cast(Table, ConversationRow.__table__)
_MSG = cast(Table, MessageRow.__table__)
_MAX_MESSAGES = 2000  # matching messages read per search: a bound, not a page


def snippet(text: str, query: str, width: int = 90) -> str:
    """One line of ``text`` around the first match of ``query`` (case-insensitive), with ellipses where cut."""
    flat = " ".join(text.split())
    at = flat.lower().find(query.lower())
    if at < 0:
        return flat[:width] + ("…" if len(flat) > width else "")
    start = max(0, at - width // 3)
    end = min(len(flat), start + width)
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


async def search_conversations(
    database: Database, owner: str, query: str, limit: int = 50
) -> tuple[list[ConversationInfo], dict[int, str]]:
    """The owner's conversations whose title or any message contains ``query``, and content snippets."""
    needle = query.strip().lower()
    if not needle:
        return [], {}
    titled = select(_CONV.c.id).where(
        _CONV.c.owner == owner, func.lower(_CONV.c.title).contains(needle, autoescape=True)
    )
    said = (
        select(_MSG.c.conversation_id, _MSG.c.content)
        .join(_CONV, _CONV.c.id == _MSG.c.conversation_id)
        .where(_CONV.c.owner == owner, func.lower(_MSG.c.content).contains(needle, autoescape=True))
        .order_by(_MSG.c.id.desc())
        .limit(_MAX_MESSAGES)
    )
    async with database.engine.connect() as conn:
        ids = set((await conn.execute(titled)).scalars().all())
        snippets: dict[int, str] = {}
        for conversation_id, content in (await conn.execute(said)).all():
            ids.add(conversation_id)
            snippets.setdefault(conversation_id, snippet(content, needle))
        if not ids:
            return [], {}
        stmt = select(_CONV).where(_CONV.c.id.in_(ids)).order_by(_CONV.c.updated_at.desc()).limit(limit)
        rows = (await conn.execute(stmt)).mappings().all()
    found = [ConversationInfo(**row) for row in rows]
    return found, {c.id: snippets[c.id] for c in found if c.id in snippets}

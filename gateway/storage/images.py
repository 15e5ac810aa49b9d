"""Images attached to chat messages (table ``message_images``): what kinds are kept, storing and reading them.

Only PNG, JPEG, WebP and GIF are kept, recognised by their first bytes, never by a name or a declared type;
an image goes when its message does (the table's foreign key cascades; SQLite's ``foreign_keys`` pragma is on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, insert, select

from minigate.gateway.storage.conversations import ConversationRow, MessageImageRow, MessageRow
from minigate.gateway.storage.db import Database
from minigate.gateway.storage.tables import utcnow

__all__ = ["IMAGE_TYPES", "ImageStore", "StoredImage", "sniff_image"]

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")

_IMG = cast(Table, MessageImageRow.__table__)
_MSG = cast(Table, MessageRow.__table__)
_CONV = cast(Table, ConversationRow.__table__)


def sniff_image(data: bytes) -> str | None:
    """The media type of an image in one of :data:`IMAGE_TYPES`, read from its magic bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One stored image: its id, the message it belongs to, its media type and bytes."""

    id: int
    message_id: int
    media_type: str
    data: bytes


class ImageStore:
    """The images of chat messages. Reads by conversation or by owner; check a conversation's owner first."""

    def __init__(self, database: Database) -> None:
        """Use ``database`` (migrated to at least ``0006``)."""
        self._db = database

    async def add(self, message_id: int, images: Sequence[bytes]) -> list[int]:
        """Store ``images`` for a message, in order; returns their ids. Refuses bytes that are not a known image."""
        rows = []
        for data in images:
            media_type = sniff_image(data)
            if media_type is None:
                raise ValueError("not a PNG, JPEG, WebP or GIF image")
            rows.append({"message_id": message_id, "media_type": media_type, "data": data, "created_at": utcnow()})
        ids: list[int] = []
        async with self._db.engine.begin() as conn:
            for row in rows:  # one insert each: inserted_primary_key is per statement
                pk = (await conn.execute(insert(_IMG).values(**row))).inserted_primary_key
                assert pk is not None
                ids.append(int(pk[0]))
        return ids

    async def for_conversation(self, conversation_id: int) -> dict[int, list[StoredImage]]:
        """Every image of a conversation's messages, by message id, in the order they were attached."""
        stmt = (
            select(_IMG)
            .join(_MSG, _MSG.c.id == _IMG.c.message_id)
            .where(_MSG.c.conversation_id == conversation_id)
            .order_by(_IMG.c.id)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        found: dict[int, list[StoredImage]] = {}
        for row in rows:
            image = StoredImage(row["id"], row["message_id"], row["media_type"], row["data"])
            found.setdefault(image.message_id, []).append(image)
        return found

    async def ids(self, conversation_id: int) -> dict[int, list[int]]:
        """The image ids of a conversation's messages, by message id (no image data is read)."""
        stmt = (
            select(_IMG.c.id, _IMG.c.message_id)
            .join(_MSG, _MSG.c.id == _IMG.c.message_id)
            .where(_MSG.c.conversation_id == conversation_id)
            .order_by(_IMG.c.id)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        found: dict[int, list[int]] = {}
        for image_id, message_id in rows:
            found.setdefault(message_id, []).append(image_id)
        return found

    async def get(self, owner: str, conversation_id: int, image_id: int) -> StoredImage | None:
        """One image of a conversation of ``owner``; None when it is not theirs or not there."""
        stmt = (
            select(_IMG)
            .join(_MSG, _MSG.c.id == _IMG.c.message_id)
            .join(_CONV, _CONV.c.id == _MSG.c.conversation_id)
            .where(_IMG.c.id == image_id, _MSG.c.conversation_id == conversation_id, _CONV.c.owner == owner)
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return None if row is None else StoredImage(row["id"], row["message_id"], row["media_type"], row["data"])

"""The web UI's tables (conversations, messages, sessions, chain overrides) and the conversation queries.

Like :mod:`minigate.gateway.storage.tables`, the schema's source of truth for queries; migration ``0003_web_ui`` creates
the tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import msgspec
from sqlalchemy import Boolean, Float, ForeignKey, Integer, LargeBinary, Table, delete, func, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from minigate.gateway.core.tokens import valid_count
from minigate.gateway.storage.branches import Tree
from minigate.gateway.storage.db import Database
from minigate.gateway.storage.tables import Base, SafeString, SafeText, UTCDateTime, utcnow

__all__ = [
    "ChainOverrideRow",
    "ConversationInfo",
    "ConversationRow",
    "ConversationStore",
    "MessageImageRow",
    "MessageInfo",
    "MessageRow",
    "WebSessionRow",
]


class ConversationRow(Base):
    """A chat conversation and the settings its next answer uses."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(SafeString(100), index=True)
    title: Mapped[str] = mapped_column(SafeString(200))
    model: Mapped[str] = mapped_column(SafeString(256))
    system_prompt: Mapped[str | None] = mapped_column(SafeText)
    temperature: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    top_p: Mapped[float | None] = mapped_column(Float)
    repetition_penalty: Mapped[float | None] = mapped_column(Float)
    current_message_id: Mapped[int | None] = mapped_column(Integer)  # the leaf of the branch the page shows


class MessageRow(Base):
    """One message of a conversation; assistant messages carry who answered and how fast."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(SafeString(16))  # "user" | "assistant"
    content: Mapped[str] = mapped_column(SafeText)
    status: Mapped[str] = mapped_column(SafeString(16))  # "ok" | "streaming" | "stopped" | "error"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    request_id: Mapped[str | None] = mapped_column(SafeString(64))
    provider: Mapped[str | None] = mapped_column(SafeText)
    model: Mapped[str | None] = mapped_column(SafeText)
    fallbacks: Mapped[int | None] = mapped_column(Integer)
    hops: Mapped[str | None] = mapped_column(SafeText)  # JSON list, as in the usage row
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(SafeText)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)  # the message this one follows


class MessageImageRow(Base):
    """An image attached to a user message (sent to the model as an OpenAI ``image_url`` data URL)."""

    __tablename__ = "message_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    media_type: Mapped[str] = mapped_column(SafeString(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebSessionRow(Base):
    """A browser session of the web UI (opaque cookie; only its hash is stored)."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    owner: Mapped[str] = mapped_column(SafeString(100))
    admin: Mapped[bool] = mapped_column(Boolean)
    key_id: Mapped[int | None] = mapped_column(Integer)  # the admin API key used to log in, if any
    user_id: Mapped[int | None] = mapped_column(Integer)  # the person logged in (users.id), if any
    csrf: Mapped[str] = mapped_column(SafeString(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ChainOverrideRow(Base):
    """An agent's chain as edited in the web UI: a JSON list of ``provider/model`` references."""

    __tablename__ = "chain_overrides"

    agent: Mapped[str] = mapped_column(SafeString(200), primary_key=True)
    chain: Mapped[str] = mapped_column(SafeText)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


_CONV = cast(Table, ConversationRow.__table__)
_MSG = cast(Table, MessageRow.__table__)
_IMAGES = cast(Table, MessageImageRow.__table__)


class ConversationInfo(msgspec.Struct, kw_only=True):
    """A conversation as the pages show it."""

    id: int
    owner: str
    title: str
    model: str
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None
    created_at: datetime
    updated_at: datetime
    top_p: float | None = None
    repetition_penalty: float | None = None
    current_message_id: int | None = None


class MessageInfo(msgspec.Struct, kw_only=True):
    """A message as the pages show it (``hops`` decoded)."""

    id: int
    conversation_id: int
    role: str
    content: str
    status: str
    created_at: datetime
    request_id: str | None = None
    provider: str | None = None
    model: str | None = None
    fallbacks: int | None = None
    hops: list[dict[str, Any]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    error: str | None = None
    parent_id: int | None = None
    siblings: list[int] = msgspec.field(default_factory=list)  # this message's versions (ids), oldest first

    @property
    def version(self) -> int:
        """Which of its versions this message is, from 1 (1 when it has no others)."""
        return self.siblings.index(self.id) + 1 if self.id in self.siblings else 1

    @property
    def versions(self) -> int:
        """How many versions of this message there are (edits of a user message, answers to the same one)."""
        return max(len(self.siblings), 1)

    @property
    def previous_version(self) -> int | None:
        """The id of the version before this one, if any."""
        return self.siblings[self.version - 2] if self.version > 1 else None

    @property
    def next_version(self) -> int | None:
        """The id of the version after this one, if any."""
        return self.siblings[self.version] if self.version < len(self.siblings) else None

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens per second of generation (after the first token)."""
        if not self.completion_tokens or self.latency_ms is None:
            return None
        seconds = (self.latency_ms - (self.ttft_ms or 0.0)) / 1000
        return self.completion_tokens / seconds if seconds > 0.001 else None


def _message(row: Any) -> MessageInfo:
    data = dict(row)
    if data.get("hops"):
        data["hops"] = msgspec.json.decode(data["hops"])
    return MessageInfo(**data)


# What finish_message may set: not the message's place in the tree.
_MESSAGE_FIELDS = frozenset(MessageInfo.__struct_fields__) - {
    "id", "conversation_id", "created_at", "role", "parent_id", "siblings",
}  # fmt: skip
# add_message's default parent: the leaf the page shows, read in the INSERT itself (no read-then-write race).
_CURRENT = object()


class ConversationStore:
    """Conversations and messages of one owner at a time; every query is scoped by ``owner``."""

    def __init__(self, database: Database) -> None:
        """Use ``database`` (migrated to at least ``0003``)."""
        self._db = database

    async def create(self, owner: str, *, title: str, model: str, system_prompt: str | None = None) -> int:
        """A new, empty conversation; returns its id."""
        now = utcnow()
        values = {"owner": owner, "title": title[:200], "model": model[:256], "system_prompt": system_prompt}
        async with self._db.engine.begin() as conn:
            result = await conn.execute(insert(_CONV).values(**values, created_at=now, updated_at=now))
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])

    async def list(self, owner: str, limit: int = 200) -> Sequence[ConversationInfo]:
        """The owner's conversations, most recently active first."""
        stmt = select(_CONV).where(_CONV.c.owner == owner).order_by(_CONV.c.updated_at.desc()).limit(limit)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [ConversationInfo(**row) for row in rows]

    async def get(self, owner: str, conversation_id: int) -> ConversationInfo | None:
        """One conversation of the owner, or None."""
        stmt = select(_CONV).where(_CONV.c.id == conversation_id, _CONV.c.owner == owner)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return None if row is None else ConversationInfo(**row)

    async def update(self, owner: str, conversation_id: int, **values: Any) -> bool:
        """Change a conversation's title or settings; False when the owner has no such conversation."""
        allowed = {
            "title", "model", "system_prompt", "temperature", "max_tokens", "top_p", "repetition_penalty",
            "current_message_id",
        }  # fmt: skip
        if not values.keys() <= allowed:
            raise ValueError(f"cannot update {sorted(values.keys() - allowed)}")
        stmt = (
            update(_CONV)
            .where(_CONV.c.id == conversation_id, _CONV.c.owner == owner)
            .values(**values, updated_at=utcnow())
        )
        async with self._db.engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def delete(self, owner: str, conversation_id: int) -> bool:
        """Delete a conversation and its messages, every branch and image of them."""
        async with self._db.engine.begin() as conn:
            owned = select(_CONV.c.id).where(_CONV.c.id == conversation_id, _CONV.c.owner == owner)
            # Not left to ON DELETE CASCADE: a SQLite connection opened without foreign_keys=ON ignores it.
            ids = select(_MSG.c.id).where(_MSG.c.conversation_id.in_(owned))
            await conn.execute(delete(_IMAGES).where(_IMAGES.c.message_id.in_(ids)))
            await conn.execute(delete(_MSG).where(_MSG.c.conversation_id.in_(owned)))
            result = await conn.execute(delete(_CONV).where(_CONV.c.id == conversation_id, _CONV.c.owner == owner))
        return result.rowcount == 1

    async def _tree(self, conn: Any, conversation_id: int) -> tuple[Tree, int | None]:
        """The conversation's message tree and the leaf the page shows."""
        links = select(_MSG.c.id, _MSG.c.parent_id).where(_MSG.c.conversation_id == conversation_id)
        tree = Tree((int(i), p) for i, p in (await conn.execute(links)).all())
        current = select(_CONV.c.current_message_id).where(_CONV.c.id == conversation_id)
        return tree, tree.leaf((await conn.execute(current)).scalar())

    async def messages(self, conversation_id: int) -> Sequence[MessageInfo]:
        """The branch the page shows, oldest first, each with its versions (check ownership with :meth:`get`).

        That is the path from the first message to ``current_message_id``: what the model is sent.
        """
        async with self._db.engine.connect() as conn:
            tree, leaf = await self._tree(conn, conversation_id)
            return await self._branch(conn, tree, leaf)

    async def branch(self, conversation_id: int, leaf_id: int) -> Sequence[MessageInfo]:
        """The messages from the first one down to ``leaf_id`` (empty if it is not in the conversation)."""
        async with self._db.engine.connect() as conn:
            tree, _ = await self._tree(conn, conversation_id)
            return await self._branch(conn, tree, leaf_id)

    async def _branch(self, conn: Any, tree: Tree, leaf: int | None) -> Sequence[MessageInfo]:
        path = tree.path(leaf) if leaf is not None else []
        if not path:
            return []
        rows = (await conn.execute(select(_MSG).where(_MSG.c.id.in_(path)))).mappings().all()
        by_id = {row["id"]: _message(row) for row in rows}
        branch = [by_id[i] for i in path if i in by_id]
        for message in branch:
            message.siblings = tree.siblings(message.id)
        return branch

    async def show(self, conversation_id: int, message_id: int) -> int | None:
        """Show the branch through ``message_id``: its newest leaf becomes the current one; returns that leaf.

        None when the message is not in the conversation (nothing changes).
        """
        async with self._db.engine.begin() as conn:
            tree, _ = await self._tree(conn, conversation_id)
            if message_id not in tree:
                return None
            leaf = tree.latest_leaf(message_id)
            stmt = update(_CONV).where(_CONV.c.id == conversation_id).values(current_message_id=leaf)
            await conn.execute(stmt)
        return leaf

    async def add_message(
        self, conversation_id: int, role: str, content: str, status: str = "ok", *, parent_id: Any = _CURRENT
    ) -> MessageInfo:
        """Add a message after ``parent_id`` (default: the current leaf; None: a first message), make it the
        current leaf and mark the conversation active."""
        now = utcnow()
        if parent_id is _CURRENT:
            parent: Any = select(_CONV.c.current_message_id).where(_CONV.c.id == conversation_id).scalar_subquery()
        else:
            parent = parent_id
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                insert(_MSG).values(
                    conversation_id=conversation_id,
                    role=role,
                    content=content,
                    status=status,
                    created_at=now,
                    parent_id=parent,
                )
            )
            pk = result.inserted_primary_key
            assert pk is not None
            new_id = int(pk[0])
            if parent_id is _CURRENT:
                parent_id = (await conn.execute(select(_MSG.c.parent_id).where(_MSG.c.id == new_id))).scalar()
            stmt = update(_CONV).where(_CONV.c.id == conversation_id)
            await conn.execute(stmt.values(updated_at=now, current_message_id=new_id))
        return MessageInfo(
            id=new_id, conversation_id=conversation_id, role=role, content=content, status=status, created_at=now,
            parent_id=parent_id,
        )  # fmt: skip

    async def finish_message(self, message_id: int, **values: Any) -> None:
        """Store an assistant message's final text, status and answer details."""
        if not values.keys() <= _MESSAGE_FIELDS:
            raise ValueError(f"cannot set {sorted(values.keys() - _MESSAGE_FIELDS)}")
        if values.get("hops") is not None:
            values["hops"] = msgspec.json.encode(values["hops"]).decode()
        for name in ("prompt_tokens", "completion_tokens"):  # counts a database or a total cannot choke on
            if name in values:
                values[name] = valid_count(values[name])
        async with self._db.engine.begin() as conn:
            await conn.execute(update(_MSG).where(_MSG.c.id == message_id).values(**values))

    async def get_message(self, message_id: int) -> MessageInfo | None:
        """One message by id, with its versions."""
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(_MSG).where(_MSG.c.id == message_id))).mappings().first()
            if row is None:
                return None
            message = _message(row)
            parent = _MSG.c.parent_id.is_(None) if message.parent_id is None else _MSG.c.parent_id == message.parent_id
            stmt = select(_MSG.c.id).where(_MSG.c.conversation_id == message.conversation_id, parent)
            message.siblings = sorted(int(i) for i in (await conn.execute(stmt.order_by(_MSG.c.id))).scalars())
        return message

    async def count(self, owner: str) -> int:
        """How many conversations the owner has."""
        stmt = select(func.count()).select_from(_CONV).where(_CONV.c.owner == owner)
        async with self._db.engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

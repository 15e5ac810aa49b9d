"""Conversations as trees on SQLite and PostgreSQL: regenerated answers and edited messages are versions (siblings),
the page shows one branch, flipping picks the newest leaf under a version, deleting takes every branch."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert

from minigate.gateway.storage import ConversationStore, Database
from minigate.gateway.storage.branches import Tree
from minigate.gateway.storage.conversations import MessageImageRow
from minigate.gateway.storage.tables import utcnow
from tests.storage.conftest import Backend


async def _ids(store: ConversationStore, conversation: int) -> list[int]:
    return [m.id for m in await store.messages(conversation)]


async def test_regenerated_answers_are_versions_of_one_answer(db: Database) -> None:
    store = ConversationStore(db)
    chat = await store.create("admin", title="t", model="default")
    question = await store.add_message(chat, "user", "Capital of France?")
    first = await store.add_message(chat, "assistant", "Paris.")
    assert question.parent_id is None and first.parent_id == question.id
    second = await store.add_message(chat, "assistant", "It is Paris.", parent_id=question.id)
    third = await store.add_message(chat, "assistant", "Paris, of course.", parent_id=question.id)
    shown = await store.messages(chat)
    assert [m.id for m in shown] == [question.id, third.id]  # the newest answer is the one shown
    answer = shown[-1]
    assert answer.siblings == [first.id, second.id, third.id]
    assert (answer.version, answer.versions, answer.previous_version, answer.next_version) == (3, 3, second.id, None)
    assert (shown[0].version, shown[0].versions) == (1, 1)

    assert await store.show(chat, first.id) == first.id
    shown = await store.messages(chat)
    assert [m.content for m in shown] == ["Capital of France?", "Paris."]
    assert (shown[-1].version, shown[-1].previous_version, shown[-1].next_version) == (1, None, second.id)
    info = await store.get("admin", chat)
    assert info is not None and info.current_message_id == first.id  # the choice is stored
    got = await store.get_message(second.id)
    assert got is not None and (got.version, got.versions) == (2, 3)


async def test_an_edited_message_starts_a_branch_and_the_old_one_stays_whole(db: Database) -> None:
    store = ConversationStore(db)
    chat = await store.create("admin", title="t", model="default")
    q1 = await store.add_message(chat, "user", "one")
    a1 = await store.add_message(chat, "assistant", "A1")
    q2 = await store.add_message(chat, "user", "two")
    a2 = await store.add_message(chat, "assistant", "A2")
    old_branch = [q1.id, a1.id, q2.id, a2.id]
    assert await _ids(store, chat) == old_branch

    edited = await store.add_message(chat, "user", "one, edited", parent_id=q1.parent_id)  # the first message
    answer = await store.add_message(chat, "assistant", "A1'", parent_id=edited.id)
    shown = await store.messages(chat)
    assert [m.id for m in shown] == [edited.id, answer.id]
    assert shown[0].siblings == [q1.id, edited.id] and shown[0].version == 2

    assert await store.show(chat, q1.id) == a2.id  # the newest leaf under the old version: its whole branch
    assert await _ids(store, chat) == old_branch
    assert await store.show(chat, edited.id) == answer.id

    # An edit of a later message: a sibling of q2, after a1, and the branch above it is shared.
    assert await store.show(chat, q1.id) == a2.id
    q2b = await store.add_message(chat, "user", "two, edited", parent_id=q2.parent_id)
    assert [m.id for m in await store.branch(chat, q2b.id)] == [q1.id, a1.id, q2b.id]
    assert await store.branch(chat, 10_000) == []
    assert await store.show(chat, 10_000) is None


async def test_a_message_follows_the_branch_shown(db: Database) -> None:
    store = ConversationStore(db)
    chat = await store.create("admin", title="t", model="default")
    q1 = await store.add_message(chat, "user", "one")
    a1 = await store.add_message(chat, "assistant", "A1")
    a1b = await store.add_message(chat, "assistant", "A1b", parent_id=q1.id)
    await store.show(chat, a1.id)
    q2 = await store.add_message(chat, "user", "two")  # no parent named: after the leaf shown
    assert q2.parent_id == a1.id
    assert await _ids(store, chat) == [q1.id, a1.id, q2.id]
    await store.show(chat, a1b.id)
    assert await _ids(store, chat) == [q1.id, a1b.id]


async def test_concurrent_messages_keep_a_tree(db: Database) -> None:
    store = ConversationStore(db)
    chat = await store.create("admin", title="t", model="default")
    root = await store.add_message(chat, "user", "root")
    named = await asyncio.gather(*(store.add_message(chat, "assistant", f"a{i}", parent_id=root.id) for i in range(6)))
    assert all(m.parent_id == root.id for m in named)
    following = await asyncio.gather(*(store.add_message(chat, "user", f"u{i}") for i in range(6)))
    ids = {root.id, *(m.id for m in named), *(m.id for m in following)}
    for message in following:  # each follows a message of the conversation stored before it
        assert message.parent_id in ids and message.parent_id < message.id
    shown = await store.messages(chat)
    assert shown[0].id == root.id and len({m.id for m in shown}) == len(shown)
    got = await store.get_message(named[0].id)
    assert got is not None and got.versions == 6


async def test_deleting_a_conversation_takes_every_branch_and_image(db: Database, backend: Backend) -> None:
    store = ConversationStore(db)
    chat = await store.create("admin", title="t", model="default")
    kept = await store.create("admin", title="kept", model="default")
    q1 = await store.add_message(chat, "user", "look")
    await store.add_message(chat, "assistant", "A")
    edited = await store.add_message(chat, "user", "look again", parent_id=None)
    other = await store.add_message(kept, "user", "mine")
    rows = [{"message_id": m.id, "media_type": "image/png", "data": b"\x89PNG", "created_at": utcnow()}
            for m in (q1, edited, other)]  # fmt: skip
    async with db.engine.begin() as conn:
        await conn.execute(insert(MessageImageRow.__table__), rows)
    assert await store.delete("admin", chat)
    assert backend.count("messages", f"conversation_id = {chat}") == 0
    assert backend.count("message_images") == 1 and backend.count("messages") == 1


async def test_a_message_keeps_its_place_in_the_tree(db: Database) -> None:
    store = ConversationStore(db)
    chat = await store.create("admin", title="t", model="default")
    message = await store.add_message(chat, "user", "one")
    for field in ("parent_id", "siblings"):
        with pytest.raises(ValueError):
            await store.finish_message(message.id, **{field: None})


def test_tree_paths_siblings_and_leaves() -> None:
    tree = Tree([(1, None), (2, 1), (3, 1), (4, 3), (5, None), (6, 2)])
    assert tree.path(4) == [1, 3, 4] and tree.path(6) == [1, 2, 6] and tree.path(99) == []
    assert tree.siblings(3) == [2, 3] and tree.siblings(5) == [1, 5] and tree.siblings(99) == []
    assert tree.latest_leaf(1) == 6 and tree.latest_leaf(3) == 4 and tree.latest_leaf(5) == 5
    assert tree.leaf(4) == 4 and tree.leaf(None) == 6 and tree.leaf(99) == 6 and Tree([]).leaf(None) is None
    assert len(Tree([(1, 2), (2, 1)]).path(1)) <= 3  # a loop in the links cannot hang it

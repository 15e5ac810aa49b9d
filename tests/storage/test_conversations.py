"""ConversationStore on SQLite and PostgreSQL: owners are kept apart, messages keep their answer details."""

from __future__ import annotations

import asyncio

import pytest

from minigate.gateway.storage import ConversationStore, Database, UsageRecord, UsageWriter
from tests.storage.conftest import Backend


async def test_conversation_life(db: Database, backend: Backend) -> None:
    store = ConversationStore(db)
    first = await store.create("admin", title="First", model="default", system_prompt="Be brief.")
    await asyncio.sleep(0.01)
    second = await store.create("admin", title="Second", model="coder")
    theirs = await store.create("guest:abc", title="Theirs", model="default")
    assert [c.id for c in await store.list("admin")] == [second, first]  # most recently active first
    assert await store.count("admin") == 2 and await store.count("guest:abc") == 1
    assert await store.get("admin", theirs) is None  # another owner's
    assert not await store.update("admin", theirs, title="mine now")
    assert not await store.delete("admin", theirs)

    question = await store.add_message(first, "user", "What is the capital of France?")
    answer = await store.add_message(first, "assistant", "", status="streaming")
    assert [c.id for c in await store.list("admin")] == [first, second]  # a message makes it active
    hops = [{"provider": "remote", "model": "gpt-4o-mini", "error": "timeout", "status": 504}]
    await store.finish_message(
        answer.id, content="Paris.", status="ok", provider="echo", model="echo", fallbacks=1, hops=hops,
        prompt_tokens=7, completion_tokens=2, latency_ms=120.0, ttft_ms=20.0, request_id="req-1",
    )  # fmt: skip
    got = await store.get_message(answer.id)
    assert got is not None
    assert (got.content, got.status, got.hops, got.fallbacks) == ("Paris.", "ok", hops, 1)
    assert got.created_at.tzinfo is not None and got.tokens_per_s == pytest.approx(2 / 0.1)

    assert await store.update("admin", first, title="Renamed", temperature=0.2, max_tokens=64)
    info = await store.get("admin", first)
    assert info is not None and (info.title, info.temperature, info.max_tokens) == ("Renamed", 0.2, 64)
    with pytest.raises(ValueError):
        await store.update("admin", first, created_at=None)

    italy = await store.add_message(first, "user", "And of Italy?")
    assert [m.id for m in await store.messages(first)] == [question.id, answer.id, italy.id]

    assert await store.delete("admin", first)
    assert await store.get("admin", first) is None
    assert backend.count("messages") == 0
    assert backend.count("conversations") == 2


async def test_nul_characters_are_stored_alike(db: Database) -> None:
    # PostgreSQL cannot store NUL in text; both backends store U+FFFD instead, so nothing is lost on either.
    store = ConversationStore(db)
    conversation = await store.create("admin", title="a\x00b", model="default")
    message = await store.add_message(conversation, "user", "before\x00after")
    assert [m.content for m in await store.messages(conversation)] == ["before\ufffdafter"]
    info = await store.get("admin", conversation)
    assert info is not None and info.title == "a\ufffdb"
    assert message.id > 0

    writer = UsageWriter(db)
    await writer.start()
    try:
        await writer.record(
            UsageRecord(
                request_id="nul", endpoint="chat/completions", requested_model="m\x00", status=502,
                latency_ms=1.0, error="upstream said \x00",
            )
        )  # fmt: skip
        row = (await writer.query_recent(1))[0]
    finally:
        await writer.close()
    assert (row["requested_model"], row["error"]) == ("m\ufffd", "upstream said \ufffd")

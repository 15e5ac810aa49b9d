"""ResponseStore on SQLite and PostgreSQL: each key sees only its own responses; what is stored reads back whole."""

from __future__ import annotations

import pytest

from minigate.gateway.storage import Database
from minigate.gateway.storage.responses import ResponseStore
from tests.storage.conftest import Backend


def response(response_id: str, text: str, previous: str | None = None) -> dict[str, object]:
    item = {"id": "msg_o", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    return {"id": response_id, "object": "response", "output": [item], "previous_response_id": previous}


async def test_responses_are_kept_per_key(db: Database, backend: Backend) -> None:
    store = ResponseStore(db)
    items = [{"id": "msg_i", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi\x00"}]}]
    await store.save(1, items, response("resp_a", "hello"))
    await store.save(None, items, response("resp_b", "from the bootstrap key", "resp_x"))

    got = await store.get(1, "resp_a")
    assert got is not None and got.response == response("resp_a", "hello")
    assert got.input[0]["content"][0]["text"] == "hi\x00"  # JSON escapes NUL, so PostgreSQL keeps it too
    assert [item["id"] for item in got.conversation] == ["msg_i", "msg_o"]
    assert await store.get(2, "resp_a") is None and await store.get(None, "resp_a") is None  # another key's
    assert (await store.get(None, "resp_b")) is not None and await store.get(1, "resp_b") is None
    assert backend.scalar("SELECT previous_response_id FROM responses WHERE id = 'resp_b'") == "resp_x"

    assert not await store.delete(2, "resp_a")  # another key cannot delete it
    assert await store.delete(1, "resp_a")
    assert await store.get(1, "resp_a") is None and not await store.delete(1, "resp_a")
    assert backend.count("responses") == 1


async def test_kept_responses_are_readable_before_their_write_lands(db: Database, backend: Backend) -> None:
    store = ResponseStore(db)
    items = [{"id": "msg_i", "type": "message", "role": "user", "content": []}]
    store.keep(7, items, response("resp_k", "soon"))
    got = await store.get(7, "resp_k")  # from memory or the table, whichever holds it now
    assert got is not None and got.response["id"] == "resp_k" and got.input == items
    assert await store.get(8, "resp_k") is None
    await store.close()
    assert backend.count("responses", "id = 'resp_k'") == 1
    assert (await store.get(7, "resp_k")) is not None

    store.keep(7, items, response("resp_d", "gone"))
    assert await store.delete(7, "resp_d")  # waits for the write, so it cannot come back
    await store.close()
    assert await store.get(7, "resp_d") is None and backend.count("responses", "id = 'resp_d'") == 0


async def test_a_failed_write_is_logged_not_raised(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    store = ResponseStore(db)
    await store.save(1, [], response("resp_same", "first"))
    store.keep(1, [], response("resp_same", "second"))  # the id is taken: the insert fails
    await store.close()
    assert any(getattr(r, "event", None) == "response_not_stored" for r in caplog.records)
    got = await store.get(1, "resp_same")
    assert got is not None and got.response["output"][0]["content"][0]["text"] == "first"

"""``/v1/responses`` end to end with the official ``openai`` SDK against the gateway in process and a fake upstream:
JSON, streams, a tool round trip, ``previous_response_id``, the stored responses' routes, keys kept apart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from minigate.gateway.storage import KeyStore, open_database
from tests.conftest import one_provider_config
from tests.fakes.behaviours import Reply, ResetAfter, Status, ToolCalls
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


@pytest.fixture
def app(inprocess_factory: Callable[..., InProcessGateway], upstream: FakeUpstream) -> InProcessGateway:
    """The gateway over the one fake upstream ``up`` (model ``default`` is ``up/m``)."""
    return inprocess_factory(one_provider_config(upstream))


def new_key(app: InProcessGateway, name: str) -> str:
    """A fresh (non-admin) API key in the gateway's database."""

    async def create() -> str:
        database = await open_database(f"sqlite+aiosqlite:///{app.db_path}")
        try:
            return (await KeyStore(database).create(name))[1]
        finally:
            await database.close()

    return asyncio.run(create())


def chat_sent(upstream: FakeUpstream) -> dict[str, Any]:
    """The chat body the upstream got last."""
    body = upstream.requests[-1].body
    assert body is not None
    return body


def test_json_answer(app: InProcessGateway, upstream: FakeUpstream) -> None:
    client = app.client()
    response = client.responses.create(model="default", input="Hello there", instructions="Be brief.")
    assert response.output_text == "Hello from up" and response.status == "completed"
    assert response.id.startswith("resp_") and response.model == "up/m" and response.instructions == "Be brief."
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens == 3
    assert chat_sent(upstream)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
    [row] = app.wait_rows(1)
    assert row["endpoint"] == "responses" and row["status"] == 200 and row["completion_tokens"] == 3


def test_answer_headers_name_who_answered(app: InProcessGateway) -> None:
    answer = app.http.post(
        "/v1/responses", json={"model": "default", "input": "hi"}, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert answer.status_code == 200 and answer.headers["x-minigate-provider"] == "up"
    assert answer.headers["x-minigate-fallbacks"] == "0" and answer.json()["object"] == "response"


def test_stream_with_the_sdk_helper(app: InProcessGateway) -> None:
    client = app.client()
    with client.responses.stream(model="default", input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds.count("response.output_text.delta") == 3
    assert final.output_text == "Hello from up" and final.usage is not None and final.usage.total_tokens > 0
    assert client.responses.retrieve(final.id).output_text == "Hello from up"  # stored before it completed
    [row] = app.wait_rows(1)
    assert row["endpoint"] == "responses" and row["streamed"] == 1


def test_raw_stream_frames(app: InProcessGateway) -> None:
    """Each frame names its type on an ``event:`` line; sequence numbers count from 0."""
    body = {"model": "default", "input": "Hi", "stream": True}
    answer = app.http.post("/v1/responses", json=body, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    frames = [frame for frame in answer.text.split("\n\n") if frame]
    events = []
    for frame in frames:
        kind, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        events.append(event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["status"] == "completed"


def test_tool_round_trip_resending_the_history(app: InProcessGateway, upstream: FakeUpstream) -> None:
    """As agents do: ``store: false``, and the whole history (calls and their outputs) sent again."""
    client = app.client()
    upstream.script(ToolCalls((("get_weather", '{"city": "Paris"}'),)))
    question = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.responses.create(model="default", input=question, tools=[WEATHER], store=False)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == '{"city": "Paris"}'
    assert call.call_id.startswith("call_0_") and call.status == "completed"
    sent = chat_sent(upstream)
    assert (
        sent["tools"] == [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
        and "tool_choice" not in sent
    )

    history: list[Any] = [*question, *(item.model_dump(exclude_none=True) for item in first.output)]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"})
    second = client.responses.create(model="default", input=history, tools=[WEATHER], store=False)
    assert second.output_text == "Hello from up"
    assert chat_sent(upstream)["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"},
    ]
    with pytest.raises(openai.NotFoundError):  # store: false keeps nothing
        client.responses.retrieve(first.id)


def test_tool_call_streamed(app: InProcessGateway, upstream: FakeUpstream) -> None:
    client = app.client()
    upstream.script(ToolCalls((("get_weather", '{"city": "Rome"}'),), content="Let me check."))
    stream = client.responses.create(model="default", input="Rome?", tools=[WEATHER], stream=True)
    events = list(stream)
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(pieces) == '{"city": "Rome"}' and len(pieces) == 3
    final = events[-1]
    assert final.type == "response.completed"
    message, call = final.response.output
    assert message.type == "message" and final.response.output_text == "Let me check."
    assert call.type == "function_call" and call.arguments == '{"city": "Rome"}' and call.call_id.startswith("call_0_")


def test_previous_response_id_continues_the_conversation(app: InProcessGateway, upstream: FakeUpstream) -> None:
    client = app.client()
    upstream.script(ToolCalls((("get_weather", '{"city": "Oslo"}'),)))
    first = client.responses.create(model="default", input="Weather in Oslo?", tools=[WEATHER], instructions="A")
    call = first.output[0]
    assert call.type == "function_call"
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "snow"}
    second = client.responses.create(
        model="default", previous_response_id=first.id, input=[output], tools=[WEATHER], instructions="B"
    )
    assert second.previous_response_id == first.id and second.output_text == "Hello from up"
    third = client.responses.create(model="default", previous_response_id=second.id, input="Thanks!")
    assert [(m["role"], m.get("content")) for m in chat_sent(upstream)["messages"]] == [
        ("user", "Weather in Oslo?"),
        ("assistant", None),
        ("tool", "snow"),
        ("assistant", "Hello from up"),
        ("user", "Thanks!"),
    ]  # the earlier instructions are not carried over, as OpenAI does
    assert third.status == "completed"

    items = client.responses.input_items.list(third.id)
    kinds = [(item.type, getattr(item, "role", None)) for item in items.data]
    assert kinds == [
        ("message", "user"),
        ("message", "assistant"),
        ("function_call_output", None),
        ("function_call", None),
        ("message", "user"),
    ]  # newest first by default
    assert all(item.id for item in items.data) and items.has_more is False


def test_input_items_pages(app: InProcessGateway) -> None:
    client = app.client()
    turns = [{"role": "user", "content": f"turn {n}"} for n in range(5)]
    response = client.responses.create(model="default", input=turns)
    page = client.responses.input_items.list(response.id, order="asc", limit=2)
    assert [item.content[0].text for item in page.data] == ["turn 0", "turn 1"]  # type: ignore[union-attr]
    assert page.has_more is True and page.first_id == page.data[0].id and page.last_id == page.data[1].id
    rest = client.responses.input_items.list(response.id, order="asc", after=page.last_id, limit=10)
    assert [item.content[0].text for item in rest.data] == ["turn 2", "turn 3", "turn 4"]  # type: ignore[union-attr]
    assert rest.has_more is False
    everything = [item.id for item in client.responses.input_items.list(response.id, order="asc", limit=2)]
    assert len(everything) == 5  # the SDK's auto-paging follows last_id with after
    bad = app.http.get(
        f"/v1/responses/{response.id}/input_items?limit=0", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert bad.status_code == 400 and "error" in bad.json()


def test_get_and_delete(app: InProcessGateway) -> None:
    client = app.client()
    response = client.responses.create(model="default", input="keep me", metadata={"ticket": "42"})
    got = client.responses.retrieve(response.id)
    assert got.id == response.id and got.output_text == "Hello from up" and got.metadata == {"ticket": "42"}
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    deleted = app.http.delete(f"/v1/responses/{response.id}", headers=headers)
    assert deleted.status_code == 200 and deleted.json() == {"id": response.id, "object": "response", "deleted": True}
    for answer in (
        app.http.get(f"/v1/responses/{response.id}", headers=headers),
        app.http.delete(f"/v1/responses/{response.id}", headers=headers),
        app.http.get(f"/v1/responses/{response.id}/input_items", headers=headers),
        app.http.get("/v1/responses/resp_unknown", headers=headers),
    ):
        assert answer.status_code == 404
        assert (
            answer.json()["error"]["type"] == "invalid_request_error" and answer.json()["error"]["code"] == "not_found"
        )
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="default", input="x", previous_response_id=response.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_a_key_reads_only_its_own_responses(app: InProcessGateway) -> None:
    alice, bob = app.client(new_key(app, "alice")), app.client(new_key(app, "bob"))
    mine = alice.responses.create(model="default", input="secret")
    assert alice.responses.retrieve(mine.id).id == mine.id
    for attempt in (
        lambda: bob.responses.retrieve(mine.id),
        lambda: bob.responses.delete(mine.id),
        lambda: bob.responses.input_items.list(mine.id),
        lambda: bob.responses.create(model="default", input="x", previous_response_id=mine.id),
        lambda: app.client().responses.retrieve(mine.id),  # not even the bootstrap admin key
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert alice.responses.retrieve(mine.id).id == mine.id  # bob's delete did nothing


@pytest.mark.parametrize("kind", ["web_search", "file_search", "computer_use_preview", "code_interpreter", "mcp"])
def test_hosted_tools_are_refused_and_nothing_is_sent(app: InProcessGateway, upstream: FakeUpstream, kind: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        app.client().responses.create(model="default", input="x", tools=[{"type": kind}])  # type: ignore[list-item]
    assert caught.value.body["param"] == "tools[0].type" and kind in caught.value.body["message"]  # type: ignore[index]
    assert upstream.requests == []


def test_what_an_agent_sends(app: InProcessGateway, upstream: FakeUpstream) -> None:
    """The body of an agent's first request: developer role, input_text parts, store false and its hints."""
    body = {
        "model": "default",
        "instructions": "You are a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<env>linux</env>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
        ],
        "tools": [{**WEATHER, "name": "exec_command"}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "c0ffee",
        "client_metadata": {"a": "b"},
    }
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "accept": "text/event-stream", "session-id": "s1"}
    answer = app.http.post("/v1/responses", json=body, headers=headers)
    assert answer.status_code == 200 and "event: response.completed" in answer.text
    sent = chat_sent(upstream)
    assert [m["role"] for m in sent["messages"]] == ["system", "system", "user"]
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is True and sent["stream"] is True
    for ignored in ("reasoning", "include", "prompt_cache_key", "client_metadata", "store", "input", "instructions"):
        assert ignored not in sent


def test_upstream_failures(app: InProcessGateway, upstream: FakeUpstream) -> None:
    client = app.client()
    upstream.script(Status(500, {"message": "boom"}))
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(model="default", input="x")
    assert caught.value.status_code >= 500
    upstream.script(ResetAfter(2))
    events = list(client.responses.create(model="default", input="x", stream=True))
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and "mid-stream" in failed.error.message
    with pytest.raises(openai.NotFoundError):  # a failed answer is not stored
        client.responses.retrieve(failed.id)


def test_bad_requests(app: InProcessGateway) -> None:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert app.http.post("/v1/responses", json={"model": "default", "input": "x"}).status_code == 401
    bad_json = app.http.post("/v1/responses", content=b"{nope", headers=headers)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    wrong = app.http.post(
        "/v1/responses", json={"model": "default", "input": "x", "temperature": "hot"}, headers=headers
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "temperature"
    unknown = app.http.post("/v1/responses", json={"model": "nope", "input": "x"}, headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_plugins_see_the_translated_call(
    inprocess_factory: Callable[..., InProcessGateway], upstream: FakeUpstream
) -> None:
    """The plugins' process hook runs as for chat: a refused answer is a 451, a refused chunk ends the stream."""
    upstream.set_default(Reply(chunks=6))
    app = inprocess_factory({**one_provider_config(upstream), "plugins": {"modules": ["tests.plugins.chunk_guard"]}})
    client = app.client()
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(model="default", input="count")
    assert caught.value.status_code == 451 and caught.value.body["code"] == "unwanted_answer"  # type: ignore[index]
    events = list(client.responses.create(model="default", input="count", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "tok0 tok1 tok2"
    assert events[-1].type == "response.failed" and "tok3" in events[-1].response.error.message  # type: ignore[union-attr]
    assert [row["status"] for row in app.wait_rows(2)] == [451, 451]

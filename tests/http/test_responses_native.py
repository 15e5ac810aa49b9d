"""``/v1/responses`` passed through to an upstream that speaks the Responses API (``"api": "responses"``), with the
official ``openai`` SDK against the gateway in process: JSON and streams, the body the upstream gets, the gateway's
own ids and stored responses (``previous_response_id`` expanded by the gateway), fallback onto a chat deployment,
a failure mid-stream, usage rows, and no pass-through while a plugin has a ``process`` hook."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.behaviours import Status
from tests.fakes.responses_upstream import Answer, FailedMidStream, ResponsesUpstream
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


@pytest.fixture
def native() -> Iterator[ResponsesUpstream]:
    with ResponsesUpstream("native", api_key="native-key") as fake:
        yield fake


def config(native: ResponsesUpstream, backup: FakeUpstream) -> dict[str, Any]:
    """Agent ``defaults``: native/m (Responses API), then backup/m (chat only)."""
    return {
        "agents": {"defaults": {"model": {"primary": "native/m", "fallbacks": ["backup/m"]}}},
        "models": {
            "providers": {
                "native": {
                    "endpoint": native.url,
                    "api": "responses",
                    "auth": {"type": "api_key", "value": "native-key"},
                    "timeout": 5,
                },
                "backup": {"endpoint": backup.url, "auth": {"type": "api_key", "value": "backup-key"}, "timeout": 5},
            }
        },
        "router": {"timeout": 10},
    }


@pytest.fixture
def app(
    inprocess_factory: Callable[..., InProcessGateway], native: ResponsesUpstream, backup: FakeUpstream
) -> InProcessGateway:
    return inprocess_factory(config(native, backup))


def sent(native: ResponsesUpstream, index: int = -1) -> dict[str, Any]:
    request = native.requests[index]
    assert request.path == "/v1/responses" and request.body is not None
    return request.body


def test_a_json_answer_is_passed_through(app: InProcessGateway, native: ResponsesUpstream) -> None:
    client = app.client()
    raw = client.responses.with_raw_response.create(
        model="default",
        input=[{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]}],
        tools=[WEATHER],
        reasoning={"summary": "auto"},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="cache-1",
        metadata={"ticket": "42"},
    )
    response = raw.parse()
    assert response.output_text == "Hello from native" and response.status == "completed"
    assert response.model == "native/m" and response.store is True and response.metadata == {"ticket": "42"}
    assert raw.headers["x-minigate-provider"] == "native" and raw.headers["x-minigate-fallbacks"] == "0"
    body = sent(native)
    # The client's own body: nothing translated away, only the model and store (the gateway keeps the response).
    assert body == {
        "model": "m",
        "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]}],
        "tools": [WEATHER],
        "reasoning": {"summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "cache-1",
        "metadata": {"ticket": "42"},
        "store": False,
    }
    assert [r.path for r in native.requests] == ["/v1/responses"]
    # The id is the gateway's own: the upstream keeps nothing, the gateway stores and serves it.
    stored = app.http.get(f"/v1/responses/{response.id}", headers=AUTH)
    assert stored.status_code == 200 and stored.json()["output"][0]["content"][0]["text"] == "Hello from native"
    [row] = app.wait_rows(1)
    assert (row["endpoint"], row["provider"], row["status"], row["streamed"]) == ("responses", "native", 200, 0)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (2, 3, 5)


def test_a_stream_is_passed_through_with_the_gateways_ids(app: InProcessGateway, native: ResponsesUpstream) -> None:
    native.script(Answer(text="Sunny and warm today", calls=(("get_weather", {"city": "Paris"}),)))
    client = app.client()
    with client.responses.stream(model="default", input="Weather in Paris?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert sent(native)["stream"] is True
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    created = events[0].response
    assert created.id == final.id and final.id.startswith("resp_") and final.model == "native/m"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Sunny and warm today"
    [call] = [item for item in final.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    [row] = app.wait_rows(1)
    assert (row["provider"], row["streamed"], row["status"]) == ("native", 1, 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (final.usage.input_tokens, 5)  # type: ignore[union-attr]
    assert app.http.get(f"/v1/responses/{final.id}", headers=AUTH).json()["status"] == "completed"


def test_previous_response_id_is_expanded_by_the_gateway(app: InProcessGateway, native: ResponsesUpstream) -> None:
    client = app.client()
    first = client.responses.create(model="default", input="My name is Ada.", instructions="Be brief.")
    native.script(Answer(text="You are Ada."))
    with client.responses.stream(model="default", input="Who am I?", previous_response_id=first.id) as stream:
        second = stream.get_final_response()
    assert second.output_text == "You are Ada." and second.previous_response_id == first.id
    [stored_output] = app.http.get(f"/v1/responses/{first.id}", headers=AUTH).json()["output"]
    body = sent(native)
    assert "previous_response_id" not in body and body["store"] is False  # never the gateway's id upstream
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "My name is Ada."}],
         "status": "completed"},
        {k: v for k, v in stored_output.items() if k != "id"},
        {"role": "user", "content": "Who am I?"},
    ]  # fmt: skip
    # And a third turn continues the streamed second one.
    third = client.responses.create(model="default", input="Thanks.", previous_response_id=second.id)
    assert third.status == "completed" and len(sent(native)["input"]) == 5
    items = app.http.get(f"/v1/responses/{third.id}/input_items?order=asc", headers=AUTH).json()["data"]
    assert [item["type"] for item in items] == ["message"] * 5


def test_fallback_crosses_to_a_chat_deployment(
    app: InProcessGateway, native: ResponsesUpstream, backup: FakeUpstream
) -> None:
    native.script(Status(500, {"message": "native is down"}))
    raw = app.client().responses.with_raw_response.create(model="default", input="Hello there")
    response = raw.parse()
    assert response.output_text == "Hello from backup" and response.model == "backup/m"
    assert raw.headers["x-minigate-provider"] == "backup" and raw.headers["x-minigate-fallbacks"] == "1"
    [request] = backup.requests
    assert request.path == "/v1/chat/completions" and request.body is not None
    assert request.body["messages"] == [{"role": "user", "content": "Hello there"}]
    [row] = app.wait_rows(1)
    assert (row["provider"], row["fallbacks"], row["completion_tokens"]) == ("backup", 1, 3)


def test_a_failure_mid_stream_ends_with_response_failed(app: InProcessGateway, native: ResponsesUpstream) -> None:
    native.script(FailedMidStream(words=2))
    body = {"model": "default", "input": "Hi", "stream": True}
    with app.http.stream("POST", "/v1/responses", json=body, headers=AUTH) as answer:
        data = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: ")]
    assert answer.status_code == 200
    assert [e["type"] for e in data][-3:] == ["response.output_text.delta"] * 2 + ["response.failed"]
    assert [e["sequence_number"] for e in data] == list(range(len(data)))
    failed = data[-1]["response"]
    assert failed["status"] == "failed" and "The model failed mid-answer." in failed["error"]["message"]
    assert failed["id"] == data[0]["response"]["id"]
    [row] = app.wait_rows(1)
    assert row["status"] == 502 and "mid-answer" in row["error"]


def test_a_failure_before_the_first_content_falls_back(
    app: InProcessGateway, native: ResponsesUpstream, backup: FakeUpstream
) -> None:
    native.script(FailedMidStream(words=None))  # response.created, response.in_progress, then response.failed
    with app.client().responses.stream(model="default", input="Hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello from backup" and final.model == "backup/m"
    assert backup.requests[-1].path == "/v1/chat/completions"
    [row] = app.wait_rows(1)
    assert (row["provider"], row["fallbacks"], row["status"]) == ("backup", 1, 200)


def test_chat_completions_still_go_to_the_same_upstream(app: InProcessGateway, native: ResponsesUpstream) -> None:
    answer = app.client().chat.completions.create(model="native/m", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == "Hello from native"
    assert native.requests[-1].path == "/v1/chat/completions"


def test_no_pass_through_while_a_plugin_has_a_process_hook(
    inprocess_factory: Callable[..., InProcessGateway],
    native: ResponsesUpstream,
    backup: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "native_watch.py").write_text("SEEN = []\n\ndef process(event):\n    SEEN.append(event.stage)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = inprocess_factory({**config(native, backup), "plugins": {"modules": ["native_watch"], "entry_points": False}})
    response = app.client().responses.create(model="default", input="Hi")
    assert response.output_text == "Hello from native"
    assert [r.path for r in native.requests] == ["/v1/chat/completions"]  # translated: the plugin saw chat

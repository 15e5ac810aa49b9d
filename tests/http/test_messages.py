"""``/v1/messages`` end to end with Anthropic's official SDK, against the gateway in process and a fake OpenAI
upstream on 127.0.0.1: JSON and streamed answers, a tool_use -> tool_result round trip, keys, the beta path,
count_tokens, ``HEAD /``, model names mapped with aliases, usage rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from tests.conftest import one_provider_config
from tests.fakes.behaviours import ToolCalls
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.http.anthropic_sdk import anthropic_client
from tests.inprocess import InProcessGateway

MODEL = "claude-sonnet-4-5"  # an agent's own name for its model, mapped onto the upstream by an alias
HI: list[Any] = [{"role": "user", "content": "Hi"}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def app(inprocess_factory: Callable[..., InProcessGateway], upstream: FakeUpstream) -> InProcessGateway:
    """The gateway over the upstream "up", with ``claude-sonnet-4-5`` an alias of ``up/m``."""
    config = one_provider_config(upstream)
    config["models"]["aliases"] = {MODEL: "up/m"}
    return inprocess_factory(config)


@pytest.fixture
def client(app: InProcessGateway) -> Iterator[anthropic.Anthropic]:
    """The SDK as an agent uses it, with the gateway's key."""
    with anthropic_client(app) as sdk:
        yield sdk


def chat_body(upstream: FakeUpstream, index: int = -1) -> dict[str, Any]:
    """The chat-completions body the upstream was sent."""
    request = upstream.requests[index]
    assert request.path == "/v1/chat/completions" and request.body is not None
    return request.body


def test_a_json_answer(client: anthropic.Anthropic, app: InProcessGateway, upstream: FakeUpstream) -> None:
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=64000, system=[{"type": "text", "text": "Be brief."}], messages=HI
    )
    message = raw.parse()
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "Hello from up")]
    assert message.model == MODEL and message.role == "assistant" and message.id.startswith("msg_")
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 3
    assert raw.headers["x-minigate-provider"] == "up" and raw.headers["x-minigate-model"] == "m"
    assert "x-minigate-dropped" not in raw.headers
    body = chat_body(upstream)
    assert body["model"] == "m" and body["max_tokens"] == 64000
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    [row] = app.wait_rows(1)
    assert (row["endpoint"], row["requested_model"], row["provider"], row["model"]) == ("messages", MODEL, "up", "m")
    assert (row["status"], row["streamed"], row["completion_tokens"]) == (200, 0, 3)
    metrics = app.http.get("/metrics").text
    assert 'endpoint="messages"' in metrics


def test_a_streamed_answer(client: anthropic.Anthropic, app: InProcessGateway, upstream: FakeUpstream) -> None:
    with client.messages.stream(model=MODEL, max_tokens=100, messages=HI) as stream:
        pieces = list(stream.text_stream)
        message = stream.get_final_message()
    assert pieces == ["Hello", " from", " up"]
    assert message.content[0].type == "text" and message.content[0].text == "Hello from up"
    assert message.model == MODEL and message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3 and message.usage.input_tokens == 1  # the upstream's count, at the end
    assert chat_body(upstream)["stream"] is True
    [row] = app.wait_rows(1)
    assert (row["endpoint"], row["status"], row["streamed"], row["completion_tokens"]) == ("messages", 200, 1, 3)


def test_the_raw_event_order(client: anthropic.Anthropic) -> None:
    events = list(client.messages.create(model=MODEL, max_tokens=100, messages=HI, stream=True))
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK keeps pings to itself


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_use_and_tool_result_round_trip(
    client: anthropic.Anthropic, upstream: FakeUpstream, app: InProcessGateway, stream: bool
) -> None:
    upstream.script(ToolCalls((("get_weather", '{"city": "Paris"}'),), content="Let me check."))
    history: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with client.messages.stream(model=MODEL, max_tokens=100, messages=history, tools=[WEATHER]) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(model=MODEL, max_tokens=100, messages=history, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    text, use = first.content
    assert text.type == "text" and text.text == "Let me check."
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    tools = chat_body(upstream)["tools"]
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": WEATHER["description"],
            },
        }
    ]

    # The agent runs the tool and sends the whole history back with the result.
    history += [
        {"role": "assistant", "content": [block.to_dict() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 °C, sunny"}]},
    ]
    second = client.messages.create(model=MODEL, max_tokens=100, messages=history, tools=[WEATHER])
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    messages = chat_body(upstream)["messages"]
    assert messages[1]["role"] == "assistant" and messages[1]["content"] == "Let me check."
    [call] = messages[1]["tool_calls"]
    assert call["id"] == use.id and call["function"]["name"] == "get_weather"  # the id is stable both ways
    assert messages[2] == {"role": "tool", "tool_call_id": use.id, "content": "18 °C, sunny"}
    assert [row["status"] for row in app.wait_rows(2)] == [200, 200]


def test_tool_choice_reaches_the_upstream(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(ToolCalls((("get_weather", '{"city": "Rome"}'),)))
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=HI,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    )
    assert [b.type for b in message.content] == ["tool_use"]
    body = chat_body(upstream)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False


def test_the_beta_path(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    """What agents call: ``POST /v1/messages?beta=true`` with ``anthropic-beta`` flags."""
    message = client.beta.messages.create(
        model=MODEL, max_tokens=100, messages=HI, betas=["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]
    )
    assert message.content[0].type == "text" and message.content[0].text == "Hello from up"
    request = upstream.requests[-1]
    assert "anthropic-beta" not in request.headers and "x-api-key" not in request.headers  # nothing passed upstream


def test_what_an_agent_sends_on_every_request(app: InProcessGateway, upstream: FakeUpstream) -> None:
    """A first request as an agent on the Messages API sends it (shared/notes/agents.md): accepted, with the
    dropped ``thinking`` named in a header."""
    body = {
        "model": MODEL,
        "max_tokens": 64000,
        "stream": False,
        "system": [
            {"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be careful."},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}
        ],
        "tools": [WEATHER],
        "thinking": {"type": "adaptive"},
        "metadata": {"user_id": "user_abc_session_1"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
    }
    headers = {
        "x-api-key": ADMIN_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        "x-app": "cli",
        "x-stainless-lang": "js",
        "x-stainless-retry-count": "0",
    }
    r = app.http.post("/v1/messages?beta=true", json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-minigate-dropped"] == "thinking"
    assert r.json()["content"] == [{"type": "text", "text": "Hello from up"}]
    sent = chat_body(upstream)
    assert sent["user"] == "user_abc_session_1"
    assert not {"thinking", "metadata", "context_management", "output_config", "system"} & set(sent)


def test_a_streamed_answer_names_dropped_thinking_too(app: InProcessGateway) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 10,
        "messages": HI,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    with app.http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": ADMIN_KEY}) as r:
        assert r.status_code == 200 and r.headers["x-minigate-dropped"] == "thinking"
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    assert text.startswith("event: message_start\n") and text.endswith(
        'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def test_keys_by_x_api_key_or_bearer(app: InProcessGateway) -> None:
    with anthropic_client(app, key=None, auth_token=ADMIN_KEY) as bearer:  # ANTHROPIC_AUTH_TOKEN's way
        assert bearer.messages.create(model=MODEL, max_tokens=10, messages=HI).content[0].type == "text"
    with anthropic_client(app, key="mg-not-a-key") as wrong, pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": "Invalid or missing API key. Send 'x-api-key: <key>' or 'Authorization: Bearer <key>'.",
        },
    }
    r = app.http.post("/v1/messages", json={"model": MODEL, "max_tokens": 10, "messages": HI})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_count_tokens(client: anthropic.Anthropic, app: InProcessGateway, upstream: FakeUpstream) -> None:
    small = client.messages.count_tokens(model=MODEL, messages=HI)
    big = client.messages.count_tokens(model=MODEL, system="x" * 4000, messages=HI, tools=[WEATHER])
    assert 0 < small.input_tokens < 20 and big.input_tokens > small.input_tokens + 1000
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.count_tokens(model="claude-unknown", messages=HI)
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert upstream.requests == [] and app.rows() == []  # counted here: no upstream call, no usage row


def test_an_unknown_model_name(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-opus-4-1", max_tokens=10, messages=HI)
    error = caught.value.body["error"]
    assert error["type"] == "not_found_error" and "'claude-opus-4-1'" in error["message"]


def test_unknown_model_names_can_go_to_the_default_chain(
    inprocess_factory: Callable[..., InProcessGateway], upstream: FakeUpstream
) -> None:
    config = one_provider_config(upstream)
    config["router"] = {"unknown_model": "default"}
    with anthropic_client(inprocess_factory(config)) as client:
        message = client.messages.create(model="claude-opus-4-1", max_tokens=10, messages=HI)
    assert message.model == "claude-opus-4-1" and chat_body(upstream)["model"] == "m"


def test_head_on_the_base_url(app: InProcessGateway) -> None:
    r = app.http.head("/")
    assert (r.status_code, r.content) == (200, b"")
    assert app.http.get("/").status_code < 500  # the web UI, as before

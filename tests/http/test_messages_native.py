"""``/v1/messages`` passed through to an ``anthropic`` deployment, with Anthropic's official SDK against the gateway
in process and a fake Messages API upstream on 127.0.0.1: JSON and streams, ``thinking`` and ``anthropic-beta``
reaching the upstream (no ``x-minigate-dropped``), the body it gets, usage rows, fallback onto a chat deployment
(translated there), and an error mid-stream."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes.anthropic_upstream import Answer, AnthropicUpstream, ErrorEvent, Failure
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.http.anthropic_sdk import anthropic_client
from tests.inprocess import InProcessGateway

KEY = "sk-ant-native-key"
MODEL = "claude-sonnet-4-5"  # the agent's own name, mapped onto the chain by an alias
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
HI: Any = [{"role": "user", "content": "Hi"}]
BETA = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"


@pytest.fixture
def claude() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream("claude", api_key=KEY) as fake:
        yield fake


@pytest.fixture
def app(
    inprocess_factory: Callable[..., InProcessGateway], claude: AnthropicUpstream, backup: FakeUpstream
) -> InProcessGateway:
    """Agent ``coder``: claude/claude-test (Messages API), then backup/llama (chat); ``MODEL`` is its alias."""
    return inprocess_factory(
        {
            "agents": {
                "defaults": {"model": {"primary": "backup/llama"}},
                "coder": {"model": {"primary": "claude/claude-test", "fallbacks": ["backup/llama"]}},
            },
            "models": {
                "providers": {
                    "claude": {
                        "type": "anthropic",
                        "endpoint": claude.url,
                        "auth": {"type": "api_key", "value": KEY},
                        "timeout": 5,
                    },
                    "backup": {"endpoint": backup.url, "auth": {"type": "api_key", "value": "backup-key"}},
                },
                "aliases": {MODEL: "coder"},
            },
            "router": {"timeout": 10},
        }
    )


@pytest.fixture
def client(app: InProcessGateway) -> Iterator[anthropic.Anthropic]:
    with anthropic_client(app) as sdk:
        yield sdk


def test_a_json_answer_is_passed_through_with_thinking(
    client: anthropic.Anthropic, app: InProcessGateway, claude: AnthropicUpstream
) -> None:
    usage = {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 7}
    claude.script(Answer(text="It is sunny.", thinking="The user wants weather.", usage=usage))
    system: Any = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=4096,
        system=system,
        messages=HI,
        thinking=THINKING,
        metadata={"user_id": "u-1"},
        extra_headers={"anthropic-beta": BETA},
    )
    message = raw.parse()
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "The user wants weather."  # type: ignore[union-attr]
    assert message.content[1].text == "It is sunny."  # type: ignore[union-attr]
    assert message.model == MODEL and message.usage.cache_read_input_tokens == 100
    assert "x-minigate-dropped" not in raw.headers and raw.headers["x-minigate-provider"] == "claude"
    [request] = claude.requests
    # The client's body as it sent it, but the deployment's model name; its anthropic-beta header with it.
    assert request.body == {
        "model": "claude-test",
        "max_tokens": 4096,
        "system": system,
        "messages": HI,
        "thinking": THINKING,
        "metadata": {"user_id": "u-1"},
    }
    assert request.headers["anthropic-beta"] == BETA and request.headers["x-api-key"] == KEY
    [row] = app.wait_rows(1)
    assert (row["endpoint"], row["provider"], row["model"], row["status"]) == ("messages", "claude", "claude-test", 200)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (115, 7, 122)


def test_a_stream_is_passed_through(
    client: anthropic.Anthropic, app: InProcessGateway, claude: AnthropicUpstream
) -> None:
    claude.script(Answer(text="Sunny and warm", thinking="Weather, then.", calls=(("get_weather", {"city": "Paris"}),)))
    tools: Any = [
        {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    ]
    with client.messages.stream(model=MODEL, max_tokens=2048, messages=HI, thinking=THINKING, tools=tools) as stream:
        events = list(stream)
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[2].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.model == MODEL and message.stop_reason == "tool_use"
    assert any(e.type == "thinking" for e in events)  # the SDK's own event for a thinking_delta
    assert claude.requests[0].body is not None and claude.requests[0].body["stream"] is True
    assert claude.requests[0].body["thinking"] == THINKING
    [row] = app.wait_rows(1)
    assert (row["provider"], row["streamed"], row["status"]) == ("claude", 1, 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (1, message.usage.output_tokens)


def test_the_raw_stream_is_the_upstreams_own(app: InProcessGateway, claude: AnthropicUpstream) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": HI, "stream": True}
    with app.http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": ADMIN_KEY}) as answer:
        lines = [line for line in answer.iter_lines() if line]
    names = [line[7:] for line in lines if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in data] == names
    assert data[0]["message"]["model"] == MODEL and data[0]["message"]["id"].startswith("msg_")


def test_fallback_to_a_chat_deployment_translates(
    client: anthropic.Anthropic, app: InProcessGateway, claude: AnthropicUpstream, backup: FakeUpstream
) -> None:
    claude.script(Failure(529, "overloaded_error", "Overloaded"))
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=HI, thinking=THINKING)
    message = raw.parse()
    assert message.content[0].text == "Hello from backup" and message.model == MODEL  # type: ignore[union-attr]
    assert raw.headers["x-minigate-provider"] == "backup" and raw.headers["x-minigate-fallbacks"] == "1"
    assert raw.headers["x-minigate-dropped"] == "thinking"  # the chat deployment that answered could not think
    [request] = backup.requests
    assert request.path == "/v1/chat/completions" and request.body is not None
    assert request.body["messages"] == [{"role": "user", "content": "Hi"}] and "thinking" not in request.body
    assert "anthropic-beta" not in request.headers
    [row] = app.wait_rows(1)
    assert (row["provider"], row["fallbacks"], row["completion_tokens"]) == ("backup", 1, 3)


def test_a_streamed_fallback_translates_too(
    client: anthropic.Anthropic, claude: AnthropicUpstream, backup: FakeUpstream
) -> None:
    claude.script(ErrorEvent(words=0))  # message_start and ping, then an overloaded error: before any content
    with client.messages.stream(model=MODEL, max_tokens=100, messages=HI) as stream:
        text = "".join(stream.text_stream)
    assert text == "Hello from backup" and backup.requests[-1].path == "/v1/chat/completions"


def test_an_error_mid_stream_is_the_streams_error_event(app: InProcessGateway, claude: AnthropicUpstream) -> None:
    claude.script(ErrorEvent(words=2))
    body = {"model": MODEL, "max_tokens": 100, "messages": HI, "stream": True}
    with app.http.stream("POST", "/v1/messages", json=body, headers={"x-api-key": ADMIN_KEY}) as answer:
        data = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: ")]
    assert [d["type"] for d in data][-3:] == ["content_block_delta", "content_block_delta", "error"]
    assert data[-1]["error"]["type"] == "overloaded_error"
    [row] = app.wait_rows(1)
    assert row["status"] == 529 and row["provider"] == "claude"


def test_a_sections_own_beta_header_wins(
    inprocess_factory: Callable[..., InProcessGateway], claude: AnthropicUpstream
) -> None:
    section = {"type": "anthropic", "endpoint": claude.url, "auth": {"type": "api_key", "value": KEY}}
    section["headers"] = {"Anthropic-Beta": "operator-choice"}
    app = inprocess_factory(
        {
            "agents": {"defaults": {"model": {"primary": "claude/claude-test"}}},
            "models": {"providers": {"claude": section}},
        }
    )
    with anthropic_client(app) as sdk:
        sdk.messages.create(model="default", max_tokens=10, messages=HI, extra_headers={"anthropic-beta": BETA})
    assert claude.requests[0].headers["anthropic-beta"] == "operator-choice"

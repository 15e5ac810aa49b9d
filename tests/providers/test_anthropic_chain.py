"""An ``anthropic`` deployment in an agent's chain, through the gateway in process with the official ``openai``
SDK: text and tool-call round trips (JSON and streamed), fallback and cooldown, and the usage row's tokens."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from tests.fakes.anthropic_upstream import Answer, AnthropicUpstream, ErrorEvent, Failure
from tests.fakes.upstream import FakeUpstream
from tests.inprocess import InProcessGateway

KEY = "sk-ant-chain-key"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
def claude() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream("claude", api_key=KEY) as fake:
        yield fake


@pytest.fixture
def gateway(
    inprocess_factory: Callable[..., InProcessGateway], claude: AnthropicUpstream, backup: FakeUpstream
) -> InProcessGateway:
    """Agent ``defaults``: claude/claude-test, then backup/llama3-8b; agent ``alone``: claude only."""
    return inprocess_factory(
        {
            "agents": {
                "defaults": {"model": {"primary": "claude/claude-test", "fallbacks": ["backup/llama3-8b"]}},
                "alone": {"model": {"primary": "claude/claude-test"}},
            },
            "models": {
                "providers": {
                    "claude": {
                        "type": "anthropic",
                        "endpoint": claude.url,
                        "auth": {"type": "api_key", "value": KEY},
                        "models": ["claude-test"],
                        "timeout": 5,
                    },
                    "backup": {
                        "endpoint": backup.url,
                        "auth": {"type": "api_key", "value": "backup-key"},
                        "timeout": 5,
                    },
                }
            },
            "router": {"timeout": 10, "cooldown": {"failures": 2, "initial": 30}},
        }
    )


def row_of(gateway: InProcessGateway, request_id: str) -> dict[str, Any]:
    [row] = gateway.rows("request_id = ?", (request_id,))
    return row


def test_a_json_answer_and_its_usage_row(gateway: InProcessGateway, claude: AnthropicUpstream) -> None:
    usage = {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 7}
    claude.script(Answer(text="It is sunny.", usage=usage))
    raw = gateway.client().chat.completions.with_raw_response.create(model="default", messages=QUESTION)
    answer = raw.parse()
    assert answer.choices[0].message.content == "It is sunny."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (115, 7)
    assert answer.usage.prompt_tokens_details.cached_tokens == 100
    assert raw.headers["x-minigate-provider"] == "claude"
    row = row_of(gateway, raw.headers["x-request-id"])
    assert (row["status"], row["provider"], row["model"], row["fallbacks"]) == (200, "claude", "claude-test", 0)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (115, 7, 122)
    assert claude.requests[0].body["system"] == "You answer briefly."


def test_a_streamed_answer_and_its_usage_row(gateway: InProcessGateway, claude: AnthropicUpstream) -> None:
    claude.script(Answer(text="Sunny and warm today", usage={"cache_read_input_tokens": 4}))
    stream = gateway.client().chat.completions.create(
        model="default", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Sunny and warm today"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    [row] = gateway.wait_rows(1)
    assert (row["status"], row["provider"], row["streamed"]) == (200, "claude", 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (chunks[-1].usage.prompt_tokens, 4)
    assert row["prompt_tokens"] == 6 + 4  # the six words the fake counted, and the cached ones


def ask_with_tools(client: openai.OpenAI, messages: list[dict[str, Any]], stream: bool) -> dict[str, Any]:
    """The assistant message the client gets back (tool calls assembled from deltas when streamed)."""
    if not stream:
        return (
            client.chat.completions.create(model="default", messages=messages, tools=[WEATHER])
            .choices[0]
            .message.model_dump(exclude_none=True)
        )
    content, calls = "", {}
    for chunk in client.chat.completions.create(model="default", messages=messages, tools=[WEATHER], stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        content += (delta.content or "") if delta else ""
        for call in (delta.tool_calls or []) if delta else []:
            entry = calls.setdefault(
                call.index, {"id": call.id, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            assert call.function is not None
            entry["function"]["name"] += call.function.name or ""
            entry["function"]["arguments"] += call.function.arguments or ""
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = list(calls.values())
    return message


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_tool_call_round_trip(gateway: InProcessGateway, claude: AnthropicUpstream, stream: bool) -> None:
    claude.script(Answer(calls=(("get_weather", {"city": "Paris"}),)), Answer(text="18 C and sunny in Paris."))
    client = gateway.client()
    called = ask_with_tools(client, QUESTION, stream)
    [call] = called["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    result = {"role": "tool", "tool_call_id": call["id"], "content": '{"temp": 18, "sky": "sunny"}'}
    final = ask_with_tools(client, [*QUESTION, called, result], stream)
    assert final["content"] == "18 C and sunny in Paris."
    sent = claude.requests[1].body
    assert sent is not None
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == [
        {"type": "tool_use", "id": call["id"], "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call["id"], "content": '{"temp": 18, "sky": "sunny"}'}
    ]
    assert [r["status"] for r in gateway.wait_rows(2)] == [200, 200]


def test_an_overloaded_deployment_falls_back(
    gateway: InProcessGateway, claude: AnthropicUpstream, backup: FakeUpstream
) -> None:
    claude.script(Failure(529, "overloaded_error", "Overloaded"))
    raw = gateway.client().chat.completions.with_raw_response.create(model="default", messages=QUESTION)
    assert raw.parse().choices[0].message.content == "Hello from backup"
    assert (raw.headers["x-minigate-provider"], raw.headers["x-minigate-fallbacks"]) == ("backup", "1")
    row = row_of(gateway, raw.headers["x-request-id"])
    [hop] = json.loads(row["hops"])
    assert (hop["provider"], hop["status"], hop["code"], hop["error"]) == ("claude", 529, "http_529", "Overloaded")


def test_a_rate_limit_cools_the_deployment_down(
    gateway: InProcessGateway, claude: AnthropicUpstream, backup: FakeUpstream
) -> None:
    claude.script(Failure(429, "rate_limit_error", "rate limited", {"retry-after": "30"}))
    client = gateway.client()
    for _ in range(2):
        answer = client.chat.completions.create(model="default", messages=QUESTION)
        assert answer.choices[0].message.content == "Hello from backup"
    assert len(claude.requests) == 1  # the second request skipped it: it said how long to wait
    hops = [json.loads(r["hops"]) for r in gateway.wait_rows(2)]
    assert hops[1] == [
        {
            "provider": "claude",
            "model": "claude-test",
            "error": "cooling down",
            "status": None,
            "class": "Cooling",
            "code": "cooling_down",
        }
    ]


def test_an_error_event_before_any_content_falls_back(
    gateway: InProcessGateway, claude: AnthropicUpstream, backup: FakeUpstream
) -> None:
    claude.script(ErrorEvent("overloaded_error", "Overloaded", words=0))
    stream = gateway.client().chat.completions.create(model="default", messages=QUESTION, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello from backup"


def test_an_error_event_after_content_ends_the_stream_with_an_error(
    gateway: InProcessGateway, claude: AnthropicUpstream
) -> None:
    claude.script(ErrorEvent("overloaded_error", "Overloaded", words=2))
    stream = gateway.client().chat.completions.create(model="default", messages=QUESTION, stream=True)
    seen = ""
    with pytest.raises(openai.APIError, match="Overloaded"):
        for chunk in stream:
            seen += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert seen == "w0 w1"
    [row] = gateway.wait_rows(1)
    assert row["status"] == 529 and "Overloaded" in row["error"]


def test_a_capability_refusal_reaches_the_client(gateway: InProcessGateway, claude: AnthropicUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model="alone", messages=QUESTION, logprobs=True)
    assert info.value.code == "unsupported_parameter"
    assert "logprobs" in info.value.message
    assert claude.requests == []


def test_the_responses_api_over_an_anthropic_deployment(gateway: InProcessGateway, claude: AnthropicUpstream) -> None:
    claude.script(Answer(calls=(("get_weather", {"city": "Paris"}),)), Answer(text="Sunny in Paris."))
    client = gateway.client()
    first = client.responses.create(
        model="default", input="Weather in Paris?", tools=[{**WEATHER["function"], "type": "function"}], store=False
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"},
    ]
    second = client.responses.create(
        model="default", input=history, tools=[{**WEATHER["function"], "type": "function"}], store=False
    )
    assert second.output_text == "Sunny in Paris."
    sent = claude.requests[1].body
    assert sent is not None
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.call_id, "content": "18 C, sunny"}
    ]

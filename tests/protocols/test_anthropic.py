"""Anthropic's Messages API, the request half: every field the gateway reads, translated onto a chat-completions
body; what agents send on every request accepted; a clear 400 for what cannot be served."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from minigate.gateway.core.errors import InvalidRequest
from minigate.gateway.core.wire import ChatCompletionRequest, decode_request
from minigate.gateway.protocols.anthropic import (
    CHARS_PER_TOKEN,
    TOKENS_PER_IMAGE,
    TOKENS_PER_MESSAGE,
    CountTokensRequest,
    MessagesRequest,
    Translated,
    chat_request,
    estimate_tokens,
    prompt_body,
    translate,
)

pytestmark = pytest.mark.fast

HI = [{"role": "user", "content": "Hi"}]
WEATHER = {"name": "get_weather", "description": "The weather in a city.", "input_schema": {"type": "object"}}


def translated(**body: Any) -> Translated:
    """The translation of a Messages request body (model "m", max_tokens 100 and one user message unless given)."""
    body.setdefault("model", "m")
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", HI)
    parsed, _ = decode_request(msgspec.json.encode(body), MessagesRequest)
    return translate(parsed)


def chat(**body: Any) -> dict[str, Any]:
    """The chat body for a Messages request body."""
    return translated(**body).body


def messages(*turns: dict[str, Any], **body: Any) -> list[dict[str, Any]]:
    """The chat messages for these Messages turns."""
    out: list[dict[str, Any]] = chat(messages=list(turns), **body)["messages"]
    return out


def refused(**body: Any) -> InvalidRequest:
    """The 400 a Messages request body gets."""
    with pytest.raises(InvalidRequest) as caught:
        translated(**body)
    assert caught.value.status == 400 and caught.value.type == "invalid_request_error"
    return caught.value


def test_the_least_request() -> None:
    assert chat() == {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100}


def test_max_tokens_is_required_as_anthropic_requires_it() -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(b'{"model": "m", "messages": [{"role": "user", "content": "Hi"}]}', MessagesRequest)
    assert caught.value.message == "Missing required parameter: 'max_tokens'."
    assert "max_tokens" in refused(max_tokens=0).message
    assert chat(max_tokens=64000)["max_tokens"] == 64000  # what agents send: forwarded as it is


def test_system_as_a_string_or_text_blocks() -> None:
    assert chat(system="Be brief.")["messages"][0] == {"role": "system", "content": "Be brief."}
    blocks = [
        {"type": "text", "text": "You are an agent."},
        {"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}},
    ]
    assert chat(system=blocks)["messages"][0] == {"role": "system", "content": "You are an agent.\n\nRules."}
    assert chat(system="")["messages"] == [{"role": "user", "content": "Hi"}]
    assert "system[0]" in refused(system=[{"type": "image", "source": {}}]).message


def test_text_blocks_are_one_string() -> None:
    user = {
        "role": "user",
        "content": [{"type": "text", "text": "<reminder>x</reminder>"}, {"type": "text", "text": "Go"}],
    }
    assistant = {"role": "assistant", "content": [{"type": "text", "text": "Do"}, {"type": "text", "text": "ne"}]}
    assert messages(user, assistant) == [
        {"role": "user", "content": "<reminder>x</reminder>\n\nGo"},
        {"role": "assistant", "content": "Done"},
    ]


def test_images_become_image_url_parts() -> None:
    base64 = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    url = {"type": "image", "source": {"type": "url", "url": "https://example.org/cat.jpg"}}
    turn = {"role": "user", "content": [{"type": "text", "text": "What is this?"}, base64, url]}
    assert messages(turn) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.org/cat.jpg"}},
            ],
        }
    ]
    file = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    assert "'file' is not supported" in refused(messages=[{"role": "user", "content": [file]}]).message
    broken = {"type": "image", "source": {"type": "base64", "data": "x"}}
    assert "media_type" in refused(messages=[{"role": "user", "content": [broken]}]).message


def test_tool_use_and_tool_result_round_trip_with_their_ids() -> None:
    use = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Zürich"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_01", "content": "12 °C", "cache_control": {"type": "x"}}
    out = messages(
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, use]},
        {"role": "user", "content": [result]},
        tools=[WEATHER],
    )
    call = {
        "id": "toolu_01",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
    }
    assert out == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "12 °C"},
    ]
    assert json.loads(call["function"]["arguments"]) == use["input"]


def test_an_assistant_turn_of_tool_calls_only_has_null_content() -> None:
    uses = [
        {"type": "tool_use", "id": "a", "name": "f", "input": {}},
        {"type": "tool_use", "id": "b", "name": "g", "input": {"x": [1, 2]}},
    ]
    (assistant,) = messages({"role": "assistant", "content": uses})
    assert assistant["content"] is None
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        ("a", "f", "{}"),
        ("b", "g", '{"x": [1, 2]}'),
    ]


def test_tool_results_come_first_then_the_rest_of_the_user_turn() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    content = [
        {"type": "text", "text": "Also this."},
        {
            "type": "tool_result",
            "tool_use_id": "a",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "text", "text": "boom"}], "is_error": True},
        {"type": "tool_result", "tool_use_id": "c", "content": [{"type": "text", "text": "a picture:"}, image]},
        {"type": "tool_result", "tool_use_id": "d"},
    ]
    assert messages({"role": "user", "content": content}) == [
        {"role": "tool", "tool_call_id": "a", "content": "one\ntwo"},
        {"role": "tool", "tool_call_id": "b", "content": "Error: boom"},
        {"role": "tool", "tool_call_id": "c", "content": "a picture:"},
        {"role": "tool", "tool_call_id": "d", "content": ""},
        # a tool message carries text only: the result's image follows in the user message
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Also this."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ]


def test_thinking_blocks_in_history_are_dropped() -> None:
    content = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "text", "text": "Answer."},
    ]
    assert messages({"role": "assistant", "content": content}) == [{"role": "assistant", "content": "Answer."}]


@pytest.mark.parametrize(
    ("role", "block"),
    [
        ("user", {"type": "document", "source": {"type": "text", "data": "x"}}),
        ("user", {"type": "search_result", "source": "s", "title": "t", "content": []}),
        ("assistant", {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}),
        ("assistant", {"type": "web_search_tool_result", "tool_use_id": "s", "content": []}),
        ("user", {"type": "tool_use", "id": "a", "name": "f", "input": {}}),
        ("assistant", {"type": "tool_result", "tool_use_id": "a", "content": "x"}),
    ],
)
def test_blocks_it_cannot_translate_are_refused_by_type(role: str, block: dict[str, Any]) -> None:
    error = refused(messages=[{"role": role, "content": [block]}])
    assert repr(block["type"]) in error.message and "messages[0].content[0]" in error.message


@pytest.mark.parametrize(
    "turn",
    [
        {"role": "system", "content": "x"},
        {"role": "user", "content": []},
        {"role": "user"},
        {"role": "user", "content": [{"type": "text"}]},
        {"role": "user", "content": [{"type": "tool_result", "content": "x"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": 5}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": [{"type": "document"}]}]},
        {"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]},
    ],
)
def test_malformed_turns_are_refused(turn: dict[str, Any]) -> None:
    refused(messages=[turn])


def test_no_messages_is_refused() -> None:
    refused(messages=[])


def test_sampling_fields_stop_sequences_and_user() -> None:
    body = chat(temperature=0.5, top_p=0.9, top_k=40, stop_sequences=["\n\nHuman:", "END"], metadata={"user_id": "u-1"})
    assert body == {
        "model": "m",
        "messages": HI,
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["\n\nHuman:", "END"],
        "user": "u-1",
    }
    assert translated(stop_sequences=["END"]).stop_sequences == ["END"]
    assert "user" not in chat(metadata={})
    assert "stop" not in chat(stop_sequences=[])


@pytest.mark.parametrize(
    "field", [{"temperature": 1.5}, {"temperature": -1}, {"top_p": 2}, {"top_k": -1}, {"stop_sequences": "END"}]
)
def test_out_of_range_sampling_fields_are_refused(field: dict[str, Any]) -> None:
    assert refused(**field).param == next(iter(field))


def test_stream() -> None:
    assert chat(stream=True)["stream"] is True
    assert "stream" not in chat(stream=False)


@pytest.mark.parametrize("thinking", [{"type": "enabled", "budget_tokens": 2048}, {"type": "adaptive"}])
def test_thinking_is_dropped_and_said_so(thinking: dict[str, Any]) -> None:
    out = translated(thinking=thinking)
    assert out.dropped == ["thinking"] and "thinking" not in out.body


def test_disabled_thinking_drops_nothing() -> None:
    assert translated(thinking={"type": "disabled"}).dropped == []
    assert translated().dropped == []


def test_what_agents_send_on_every_request_is_accepted_and_not_forwarded() -> None:
    """The hints of a real agent's first request (docs: shared/notes/agents.md) that do not change the answer."""
    body = chat(
        context_management={"edits": [{"type": "clear_tool_uses_20250919"}]},
        output_config={"effort": "medium"},
        service_tier="auto",
        container="c",
        mcp_servers=[],
        a_field_from_the_future={"x": 1},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}
        ],
    )
    assert body == {"model": "m", "messages": HI, "max_tokens": 100}


def test_an_output_format_schema_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = chat(output_config={"format": {"type": "json_schema", "schema": schema}})
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    refused(output_config={"format": {"type": "json_schema", "schema": "x"}})


def test_the_chat_body_is_a_valid_chat_request() -> None:
    use = {"type": "tool_use", "id": "a", "name": "get_weather", "input": {}}
    body = chat(
        system="s",
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "ok"}]},
        ],
        tools=[WEATHER],
        tool_choice={"type": "auto"},
        stream=True,
    )
    request = chat_request(body)
    assert isinstance(request, ChatCompletionRequest)
    assert request.stream is True and [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]


def test_count_tokens_takes_a_prompt_without_max_tokens() -> None:
    raw = {"model": "m", "messages": HI, "system": "s", "tools": [WEATHER]}
    parsed, _ = decode_request(msgspec.json.encode(raw), CountTokensRequest)
    body = prompt_body(parsed)
    assert (
        body["messages"][0] == {"role": "system", "content": "s"}
        and body["tools"][0]["function"]["name"] == "get_weather"
    )
    assert "max_tokens" not in body


def test_the_token_estimate() -> None:
    def estimate(**body: Any) -> int:
        body.setdefault("model", "m")
        parsed, _ = decode_request(msgspec.json.encode(body), CountTokensRequest)
        return estimate_tokens(prompt_body(parsed))

    text = "x" * (40 * CHARS_PER_TOKEN)
    assert estimate(messages=[{"role": "user", "content": text}]) == 40 + TOKENS_PER_MESSAGE
    with_system = estimate(system=text, messages=[{"role": "user", "content": text}])
    assert with_system == 80 + 2 * TOKENS_PER_MESSAGE
    image = {"type": "image", "source": {"type": "url", "url": "https://example.org/a.png"}}
    assert estimate(messages=[{"role": "user", "content": [image]}]) == TOKENS_PER_IMAGE + TOKENS_PER_MESSAGE
    # tool definitions and tool calls count too: agents send thousands of tokens of them
    plain = estimate(messages=HI)
    assert estimate(messages=HI, tools=[WEATHER]) > plain + len(WEATHER["description"]) // CHARS_PER_TOKEN
    use = {"type": "tool_use", "id": "a", "name": "f", "input": {"path": "y" * 400}}
    assert estimate(messages=[*HI, {"role": "assistant", "content": [use]}]) >= plain + 100


def test_types_that_are_not_strings_are_refused_not_crashed_on() -> None:
    """A block's or tool choice's ``type`` may be any JSON value: a list or an object is a 400 too."""
    for kind in ([1], {"a": 1}, 5, None):
        refused(messages=[{"role": "user", "content": [{"type": kind}]}])
        refused(messages=[{"role": "assistant", "content": [{"type": kind}]}])
        refused(tools=[WEATHER], tool_choice={"type": kind})
        if kind is not None:  # no type is a custom tool
            refused(tools=[{**WEATHER, "type": kind}])

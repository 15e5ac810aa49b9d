"""Chat-completions bodies translated to Messages requests: every field, and a refusal for every one the
Messages API cannot express. Each translated request is also checked against the fake upstream's strict rules."""

from __future__ import annotations

from typing import Any

import pytest

from minigate.providers.anthropic_request import messages_request, tool_id
from minigate.providers.base import ProviderError
from tests.fakes.anthropic_upstream import request_problem

pytestmark = pytest.mark.fast

USER = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}


def translate(**body: Any) -> dict[str, Any]:
    """The Messages request for ``body`` (messages default to one user turn), checked as the real API would."""
    body.setdefault("messages", [USER])
    out = messages_request(body, "claude-test")
    assert request_problem(out) is None, request_problem(out)
    return out


def refusal(**body: Any) -> ProviderError:
    body.setdefault("messages", [USER])
    with pytest.raises(ProviderError) as info:
        messages_request(body, "claude-test")
    return info.value


def test_a_plain_chat_becomes_a_messages_request_with_a_default_max_tokens() -> None:
    assert translate() == {
        "model": "claude-test",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]}],
    }
    assert messages_request({"messages": [USER]}, "m", default_max_tokens=77)["max_tokens"] == 77


def test_max_tokens_and_max_completion_tokens() -> None:
    assert translate(max_tokens=100)["max_tokens"] == 100
    assert translate(max_completion_tokens=50, max_tokens=100)["max_tokens"] == 50


def test_system_and_developer_messages_are_hoisted_into_system() -> None:
    out = translate(messages=[{"role": "system", "content": "Be brief."}, USER])
    assert out["system"] == "Be brief."
    assert [m["role"] for m in out["messages"]] == ["user"]
    parts = [
        {"type": "text", "text": "Rules:"},
        {"type": "text", "text": "no jokes", "cache_control": {"type": "ephemeral"}},
    ]
    out = translate(
        messages=[{"role": "developer", "content": parts}, {"role": "system", "content": "And be kind."}, USER]
    )
    assert out["system"] == [
        {"type": "text", "text": "Rules:"},
        {"type": "text", "text": "no jokes", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "And be kind."},
    ]


def test_sampling_fields() -> None:
    out = translate(temperature=0.3, top_p=0.9, top_k=40, stop="END", user="user-7", stream=True)
    assert (out["temperature"], out["top_p"], out["top_k"]) == (0.3, 0.9, 40)
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "user-7"}
    assert out["stream"] is True
    assert translate(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert translate(temperature=1.7)["temperature"] == 1  # the top of Anthropic's range


def test_fields_without_an_equivalent_that_change_nothing_asked_are_left_out() -> None:
    out = translate(seed=7, presence_penalty=0.5, frequency_penalty=0.5, store=True, metadata={"a": "b"}, n=1)
    assert set(out) == {"model", "max_tokens", "messages"}
    assert "stream" not in translate(stream=False, stream_options={"include_usage": True})


def test_tools_and_every_tool_choice() -> None:
    out = translate(tools=[WEATHER])
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert "tool_choice" not in out
    choices = {
        "auto": {"type": "auto"},
        "none": {"type": "none"},
        "required": {"type": "any"},
    }
    for choice, expected in choices.items():
        assert translate(tools=[WEATHER], tool_choice=choice)["tool_choice"] == expected
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert translate(tools=[WEATHER], tool_choice=named)["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert translate(tools=[WEATHER], parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    assert translate(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)["tool_choice"] == {
        "type": "any",
        "disable_parallel_tool_use": True,
    }
    bare = {"type": "function", "function": {"name": "now"}}
    assert translate(tools=[bare])["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]
    assert "tool_choice" not in translate(tool_choice="required")  # no tools: nothing to choose from


def test_a_tool_round_trip_becomes_tool_use_then_tool_result() -> None:
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "call.2:x"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        {"role": "tool", "tool_call_id": "call.2:x", "content": [{"type": "text", "text": "humid"}]},
        {"role": "user", "content": "And tomorrow?"},
    ]
    out = translate(messages=messages, tools=[WEATHER])
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2_x", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18 C, sunny"},
        {"type": "tool_result", "tool_use_id": "call_2_x", "content": [{"type": "text", "text": "humid"}]},
        {"type": "text", "text": "And tomorrow?"},
    ]
    assert tool_id("call.2:x") == "call_2_x" == tool_id("call_2_x")


def test_assistant_text_with_tool_calls_and_empty_arguments() -> None:
    call = {"id": "c9", "type": "function", "function": {"name": "now", "arguments": ""}}
    messages = [USER, {"role": "assistant", "content": "Let me look.", "tool_calls": [call]}]
    messages.append({"role": "tool", "tool_call_id": "c9", "content": ""})
    out = translate(messages=messages)
    assert out["messages"][1]["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "c9", "name": "now", "input": {}},
    ]
    assert out["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "c9"}]


def test_consecutive_turns_of_one_role_are_merged() -> None:
    messages = [USER, {"role": "user", "content": "Quickly."}, {"role": "assistant", "content": "Sure."}]
    messages += [{"role": "assistant", "content": [{"type": "text", "text": "It is"}]}]
    out = translate(messages=messages)
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": USER["content"]}, {"type": "text", "text": "Quickly."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Sure."}, {"type": "text", "text": "It is"}]},
    ]


def test_images_become_image_blocks() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    out = translate(messages=[{"role": "user", "content": parts}])
    assert out["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "audio"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "file"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_what_the_messages_api_cannot_do_is_a_capability_refusal(body: dict[str, Any], param: str) -> None:
    err = refusal(**body)
    assert (err.status, err.code, err.param) == (400, "unsupported_parameter", param)
    assert err.fallback and err.capability and not err.cooldown


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {
                "messages": [
                    USER,
                    {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{no"}}]},
                ]
            },
            "messages[1].tool_calls[0]",
        ),
        (
            {
                "messages": [
                    USER,
                    {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1]"}}]},
                ]
            },
            "messages[1].tool_calls[0]",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
            "messages[0].content[0].image_url",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_a_request_no_deployment_could_serve_is_the_clients_error(body: dict[str, Any], param: str) -> None:
    err = refusal(**body)
    assert (err.status, err.code, err.param) == (400, "invalid_request", param)
    assert not err.fallback and not err.capability

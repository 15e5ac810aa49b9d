"""Messages answers translated to chat completions: whole messages, stream events, usage, stop reasons, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from minigate.providers.anthropic_answer import ChunkMaker, Malformed, chat_completion, chat_usage, status_error

pytestmark = pytest.mark.fast

USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}


def message(*content: dict[str, Any], stop: str = "end_turn", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": list(content),
        "stop_reason": stop,
        "usage": usage or {"input_tokens": 3, "output_tokens": 2},
    }


def test_a_text_message_becomes_a_chat_completion() -> None:
    answer = chat_completion(message({"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}), "m")
    assert answer["object"] == "chat.completion"
    assert (answer["id"], answer["model"]) == ("msg_1", "claude-x")
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_tool_use_blocks_become_tool_calls_and_thinking_is_dropped() -> None:
    blocks = (
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": 2}},
    )
    [choice] = chat_completion(message(*blocks, stop="tool_use"), "m")["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == ("toolu_1", "function", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    assert (
        chat_completion(message({"type": "text", "text": "x"}, stop=stop), "m")["choices"][0]["finish_reason"] == finish
    )


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    assert chat_usage(USAGE) == {
        "prompt_tokens": 130,
        "completion_tokens": 5,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert chat_usage({"input_tokens": "lots", "output_tokens": 4}) == {
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert chat_usage(None) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"content": "text"},
        message("not a block"),
        message({"type": "text", "text": 5}),
        message({"type": "tool_use", "id": "t", "input": {}}),
    ],
)
def test_a_malformed_message_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(Malformed):
        chat_completion(bad, "m")


def events(*blocks: tuple[str, list[dict[str, Any]]], stop: str = "end_turn") -> list[dict[str, Any]]:
    """A stream's events: each block as ``(content_block, deltas)``, with pings between."""
    start = {"id": "msg_9", "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 3}}
    out: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, (block, deltas) in enumerate(blocks):
        out.append({"type": "content_block_start", "index": index, "content_block": block})
        out += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        out += [{"type": "content_block_stop", "index": index}, {"type": "ping"}]
    out.append({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 12}})
    out.append({"type": "message_stop"})
    return out


def run(all_events: list[dict[str, Any]], include_usage: bool = True) -> list[dict[str, Any]]:
    maker = ChunkMaker("m", include_usage)
    chunks = [chunk for event in all_events for chunk in maker.feed(event)]
    assert maker.stopped
    return chunks


def test_a_streamed_text_answer() -> None:
    text = ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "Hel"}, {"type": "text_delta", "text": "lo"}])
    thinking = ({"type": "thinking", "thinking": ""}, [{"type": "thinking_delta", "thinking": "secret"}])
    chunks = run(events(thinking, text, stop="max_tokens"))
    assert {c["id"] for c in chunks} == {"msg_9"}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, None, None, "length"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 12,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    assert "usage" not in run(events(text), include_usage=False)[-1]


def test_streamed_tool_calls_come_as_openai_tool_call_deltas() -> None:
    first = {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}
    second = {"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}}
    pieces = [{"type": "input_json_delta", "partial_json": p} for p in ('{"ci', 'ty": "Paris"}')]
    chunks = run(
        events(
            ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "Checking."}]),
            (first, pieces),
            (second, [{"type": "input_json_delta", "partial_json": ""}]),
            stop="tool_use",
        )
    )
    calls = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls == [
        {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"ci'}},
        {"index": 0, "function": {"arguments": 'ty": "Paris"}'}},
        {"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "now", "arguments": ""}},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "message_start"},
        {"type": "content_block_start", "index": 0},
        {"type": "content_block_delta", "index": 5, "delta": {"type": "input_json_delta", "partial_json": "{"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": None}},
        {"type": "message_delta"},
        {"type": "message_stop"},
    ],
)
def test_a_malformed_event_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(Malformed):
        ChunkMaker("m", True).feed(bad)


def test_errors_map_onto_fallback_and_cooldown() -> None:
    overloaded = status_error(529, {"type": "overloaded_error", "message": "Overloaded"})
    assert (overloaded.status, overloaded.type, overloaded.fallback, overloaded.cooldown) == (
        529,
        "overloaded_error",
        True,
        True,
    )
    limited = status_error(429, {"type": "rate_limit_error", "message": "slow down"}, retry_after=7)
    assert (limited.fallback, limited.cooldown, limited.retry_after) == (True, True, 7)
    for status in (401, 403):
        denied = status_error(status, {"type": "authentication_error", "message": "invalid x-api-key"})
        assert denied.fallback and denied.cooldown
    long = status_error(400, {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000"})
    assert (long.code, long.fallback, long.cooldown) == ("context_length_exceeded", True, False)
    bad = status_error(400, {"type": "invalid_request_error", "message": "messages.0.content: Field required"})
    assert (bad.code, bad.fallback) == (None, False)

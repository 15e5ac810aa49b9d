"""Anthropic's Messages API, the answer half: chat completions as ``message`` objects, and chat streams as
Anthropic's events in the order its SDKs expect, checked with the official SDK's own stream accumulator."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.protocols.anthropic_out import (
    PING_AFTER,
    MessageStream,
    message_from_chat,
    stop_reason,
    usage_from_chat,
)
from minigate.gateway.routing.routes import Deployment
from minigate.gateway.serving.events import Chunk, Outcome

pytestmark = pytest.mark.fast

HI: list[Any] = [{"role": "user", "content": "Hi"}]


def completion(message: dict[str, Any], finish: str | None = "stop", **choice: Any) -> dict[str, Any]:
    """A chat completion with one choice."""
    usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    return {"id": "c", "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}], "usage": usage}


def test_a_text_answer() -> None:
    out = message_from_chat(completion({"role": "assistant", "content": "Hello"}), "claude-x", [])
    assert out["id"].startswith("msg_") and len(out["id"]) > 12
    assert {k: v for k, v in out.items() if k != "id"} == {
        "type": "message",
        "role": "assistant",
        "model": "claude-x",  # the name the client asked for, not the deployment's
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    Message.model_validate(out)  # the SDK's own type takes it


def test_tool_calls_become_tool_use_blocks() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{not json"}},
        {"id": "call_3", "type": "function", "function": {"name": "h", "arguments": "[1]"}},
        {"type": "function", "function": {"name": "k", "arguments": ""}},
    ]
    out = message_from_chat(
        completion({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"), "m", []
    )
    assert out["stop_reason"] == "tool_use"
    blocks = out["content"]
    assert [(b["type"], b["name"], b["input"]) for b in blocks] == [
        ("tool_use", "f", {"a": 1}),
        ("tool_use", "g", {}),  # arguments that are not a JSON object: an empty input
        ("tool_use", "h", {}),
        ("tool_use", "k", {}),
    ]
    assert [b["id"] for b in blocks[:3]] == ["call_1", "call_2", "call_3"]  # kept for the tool_result to name
    assert blocks[3]["id"].startswith("toolu_")
    Message.model_validate(out)


def test_tool_calls_with_a_stop_finish_are_tool_use() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    message = {"role": "assistant", "content": "Let me look.", "tool_calls": calls}
    out = message_from_chat(completion(message, "stop"), "m", [])
    assert out["stop_reason"] == "tool_use" and [b["type"] for b in out["content"]] == ["text", "tool_use"]


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_stop_reasons(finish: str | None, expected: str) -> None:
    assert stop_reason(finish, None, [], False) == (expected, None)


def test_a_stop_sequence_is_named_only_when_the_upstream_says_which() -> None:
    """Chat completions do not say which stop string ended the answer; vLLM names it in ``stop_reason``."""
    assert stop_reason("stop", "END", ["END"], False) == ("stop_sequence", "END")
    assert stop_reason("stop", None, ["END"], False) == ("end_turn", None)
    assert stop_reason("stop", "OTHER", ["END"], False) == ("end_turn", None)
    assert stop_reason("stop", 128001, ["END"], False) == ("end_turn", None)  # a stop token id
    out = message_from_chat(completion({"role": "assistant", "content": "x"}, stop_reason="END"), "m", ["END"])
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")


def test_usage_with_cached_prompt_tokens() -> None:
    """Anthropic's input_tokens exclude what was read from the cache; chat's prompt_tokens include it."""
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}
    assert usage_from_chat(usage) == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }
    assert usage_from_chat(None)["input_tokens"] == 0
    assert usage_from_chat({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}})["input_tokens"] == 0


def test_a_refusal_and_an_answer_without_choices() -> None:
    out = message_from_chat(
        completion({"role": "assistant", "content": None, "refusal": "No."}, "content_filter"), "m", []
    )
    assert out["content"] == [{"type": "text", "text": "No."}] and out["stop_reason"] == "refusal"
    assert message_from_chat({"choices": []}, "m", [])["content"] == []


# -- streams ----------------------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None, **choice: Any) -> Chunk:
    """A chat chunk with one choice."""
    return Chunk({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **choice}]})


def tool_delta(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    head: dict[str, Any] = {"index": index, "function": function}
    if call_id is not None:
        head |= {"id": call_id, "type": "function"}
        function["name"] = name
    return {"tool_calls": [head]}


def events(frames: bytes) -> list[dict[str, Any]]:
    """The SSE frames as (event name checked against the data's type) data objects."""
    out = []
    for block in frames.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            payload = json.loads(data.removeprefix("data: "))
            assert name == f"event: {payload['type']}"
            out.append(payload)
    return out


def run(chunks: list[Chunk], usage: dict[str, Any] | None = None, failure: GatewayError | None = None) -> bytes:
    stream = MessageStream("claude-x", ["END"], input_estimate=11)
    frames = stream.start() + b"".join(stream.chunk(c) for c in chunks)
    stream.usage = usage
    outcome = Outcome(Deployment("up", "m"), [])
    outcome.failure = failure
    return frames + stream.end(outcome)


def accumulated(frames: bytes) -> Any:
    """The final message as the official SDK builds it from these events (served to it as an HTTP answer)."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=frames)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    client = anthropic.Anthropic(api_key="k", base_url="http://sdk.test", http_client=http, max_retries=0)
    with client, client.messages.stream(model="claude-x", max_tokens=10, messages=HI) as stream:
        return stream.get_final_message()


USAGE = {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}


def test_a_text_stream_in_anthropic_order() -> None:
    frames = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
        ],
        USAGE,
    )
    seen = events(frames)
    assert [e["type"] for e in seen] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = seen[0]["message"]
    assert start["model"] == "claude-x" and start["content"] == [] and start["usage"]["input_tokens"] == 11
    assert seen[2] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert seen[3]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert seen[6] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 30,
            "output_tokens": 9,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    final = accumulated(frames)
    assert final.content[0].text == "Hello" and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 9)  # the real counts replace the estimate


def test_text_then_two_tool_calls() -> None:
    chunks = [
        chunk({"content": "Let me check."}),
        chunk(tool_delta(0, "", "call_a", "get_weather")),
        chunk(tool_delta(0, '{"city": ')),
        chunk(tool_delta(0, '"Paris"}')),
        chunk(tool_delta(1, '{"q": 1}', "call_b", "search")),
        chunk({}, "tool_calls"),
    ]
    frames = run(chunks, USAGE)
    seen = events(frames)
    starts = [e for e in seen if e["type"] == "content_block_start"]
    assert [s["content_block"] for s in starts] == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}},
        {"type": "tool_use", "id": "call_b", "name": "search", "input": {}},
    ]
    json_deltas = [e for e in seen if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"]
    # a call's arguments are sent whole once complete, checked to be a JSON object
    assert [(e["index"], json.loads(e["delta"]["partial_json"])) for e in json_deltas] == [
        (1, {"city": "Paris"}),
        (2, {"q": 1}),
    ]
    stops = [e["index"] for e in seen if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    final = accumulated(frames)
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("text", None),
        ("tool_use", {"city": "Paris"}),
        ("tool_use", {"q": 1}),
    ]


def test_broken_arguments_become_an_empty_input() -> None:
    frames = run([chunk(tool_delta(0, "{oops", "c", "f")), chunk({}, "tool_calls")])
    final = accumulated(frames)  # the SDK would fail on a partial_json that cannot become JSON
    assert final.content[0].input == {}


def test_a_stream_that_stops_on_a_length_limit_or_a_named_stop_sequence() -> None:
    assert accumulated(run([chunk({"content": "a"}), chunk({}, "length")])).stop_reason == "max_tokens"
    final = accumulated(run([chunk({"content": "a"}), chunk({}, "stop", stop_reason="END")]))
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "END")


def test_an_empty_answer_has_no_blocks() -> None:
    seen = events(run([chunk({}, "stop")]))
    assert [e["type"] for e in seen] == ["message_start", "ping", "message_delta", "message_stop"]


def test_a_failure_mid_stream_is_an_error_event() -> None:
    failure = GatewayError("The upstream failed mid-stream: reset", status=502, type="upstream_error")
    seen = events(run([chunk({"content": "Hel"})], failure=failure))
    assert seen[-1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "The upstream failed mid-stream: reset"},
    }
    assert "message_stop" not in [e["type"] for e in seen]
    cut = GatewayError("The answer was cut off.", status=503, type="server_error")
    assert events(run([], failure=cut))[-1]["error"]["type"] == "overloaded_error"


def test_a_ping_keeps_a_long_tool_call_alive() -> None:
    stream = MessageStream("m", [])
    stream.start()
    assert stream.chunk(chunk(tool_delta(0, "", "c", "f")))
    assert stream.chunk(chunk(tool_delta(0, '{"a":'))) == b""  # gathered, nothing to send
    stream.last -= PING_AFTER + 1  # as if that long had passed since the last frame
    assert events(stream.chunk(chunk(tool_delta(0, "1}")))) == [{"type": "ping"}]


def test_other_choices_and_usage_only_chunks_send_nothing() -> None:
    stream = MessageStream("m", [])
    stream.start()
    assert stream.chunk(Chunk({"choices": [{"index": 1, "delta": {"content": "x"}}]})) == b""
    assert stream.chunk(Chunk({"choices": [], "usage": USAGE})) == b""


def test_calls_sent_whole_at_one_index_are_calls_of_their_own() -> None:
    """Some servers send every tool call, complete, at index 0: a new id starts a new call."""
    frames = run(
        [
            chunk(tool_delta(0, '{"a": 1}', "c1", "f")),
            chunk(tool_delta(0, '{"b": 2}', "c2", "g")),
            chunk({}, "tool_calls"),
        ]
    )
    final = accumulated(frames)
    assert [(b.id, b.name, b.input) for b in final.content] == [("c1", "f", {"a": 1}), ("c2", "g", {"b": 2})]

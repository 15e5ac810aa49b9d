"""The serving layer's typed events: what a wire protocol reads from a chunk, and the one SSE writer's frames."""

from __future__ import annotations

import msgspec

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.core.sse import DONE, SSE_HEADERS, frame
from minigate.gateway.routing.chain import Hop
from minigate.gateway.routing.routes import Deployment
from minigate.gateway.serving.events import Chunk, Outcome, native_counts


def test_a_chunk_gives_its_content_and_tool_call_deltas_and_keeps_unknown_fields() -> None:
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{"}}
    data = {
        "id": "x",
        "choices": [
            {"index": 0, "delta": {"content": "Hel"}, "logprobs": {"content": []}},
            {"index": 1, "delta": {"content": "lo", "tool_calls": [call]}},
            {"index": 2, "delta": {}, "finish_reason": "stop"},
            "not a choice",
        ],
        "system_fingerprint": "fp",
    }
    chunk = Chunk(data)
    assert chunk.pieces() == ["Hel", "lo"]
    assert chunk.text() == "Hello"
    assert chunk.tool_calls() == [call]
    assert len(chunk.choices()) == 3
    assert chunk.data is data  # passed through as it came, logprobs and fingerprint included


def test_a_chunk_without_choices_has_no_deltas() -> None:
    chunk = Chunk({"choices": [], "usage": {"total_tokens": 3}})
    assert (chunk.text(), chunk.tool_calls(), chunk.choices()) == ("", [], [])
    assert Chunk({"choices": None}).pieces() == []


def test_an_outcome_counts_the_hops_passed_over() -> None:
    first, second = Deployment("a", "m"), Deployment("b", "m")
    outcome = Outcome(second, [Hop(first, cooling=3.0)])
    assert (outcome.fallbacks, outcome.status, outcome.failure) == (1, 200, None)


def test_frames_are_data_lines_of_json_and_done() -> None:
    assert frame({"a": [1, "é"]}) == b'data: {"a":[1,"\xc3\xa9"]}\n\n'
    assert msgspec.json.decode(frame(GatewayError("x", code="c").body())[6:]) == {
        "error": {"message": "x", "type": "invalid_request_error", "param": None, "code": "c"}
    }
    assert DONE == b"data: [DONE]\n\n"
    assert SSE_HEADERS == {"cache-control": "no-cache", "x-accel-buffering": "no"}


def test_native_usage_becomes_the_rows_chat_counts() -> None:
    responses = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 3,
        "total_tokens": 15,
    }
    assert native_counts(responses) == {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    anthropic = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
        "output_tokens": 7,
    }
    assert native_counts(anthropic) == {
        "prompt_tokens": 115,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert native_counts({"output_tokens": -1, "input_tokens": "x"}) == {}
    assert native_counts(None) is None and native_counts([1]) is None

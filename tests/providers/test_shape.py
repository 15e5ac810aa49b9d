"""providers/shape.py: well-formed answers of every kind the gateway passes on are accepted; what its own
consumers would trip over is named."""

from __future__ import annotations

from typing import Any

import pytest

from minigate.providers.shape import answer_problem, chunk_problem

GOOD_ANSWERS: list[tuple[str, dict[str, Any]]] = [
    ("chat/completions", {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}]}),
    ("chat/completions", {"choices": [{"index": 0, "message": {"content": None, "refusal": "no"}}]}),
    (
        "chat/completions",
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    },
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        },
    ),
    ("chat/completions", {"choices": [{"message": {"content": [{"type": "text", "text": "Hi"}]}}]}),
    ("chat/completions", {"choices": []}),
    ("completions", {"choices": [{"index": 0, "text": "Hi", "finish_reason": "length", "logprobs": None}]}),
    ("embeddings", {"object": "list", "data": [{"object": "embedding", "embedding": [0.1], "index": 0}]}),
]
GOOD_CHUNKS: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 1}},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},
    {"choices": [{"index": 0, "text": "Hi"}]},
    {"object": "something.else"},
]


@pytest.mark.parametrize(("endpoint", "body"), GOOD_ANSWERS)
def test_well_formed_answers_pass(endpoint: str, body: dict[str, Any]) -> None:
    assert answer_problem(endpoint, body) is None


@pytest.mark.parametrize("chunk", GOOD_CHUNKS)
def test_well_formed_events_pass(chunk: dict[str, Any]) -> None:
    assert chunk_problem(chunk) is None


@pytest.mark.parametrize(
    ("endpoint", "body", "problem"),
    [
        ("chat/completions", {"choices": {"0": {}}}, "choices is not a list"),
        ("chat/completions", {"choices": [{"index": True, "message": {}}]}, "choices[0].index is not an integer"),
        ("chat/completions", {"choices": [{"message": {"role": 1}}]}, "choices[0].message.role"),
        ("chat/completions", {"choices": [{"message": {"tool_calls": ["f"]}}]}, "choices[0].message.tool_calls"),
        ("chat/completions", {"choices": [{"message": {"function_call": "f"}}]}, "choices[0].message.function_call"),
        ("completions", {"choices": [{}, {"text": ["a"]}]}, "choices[1].text"),
        ("embeddings", {"data": "abc"}, "data is not a list of objects"),
    ],
)
def test_malformed_answers_are_named(endpoint: str, body: dict[str, Any], problem: str) -> None:
    found = answer_problem(endpoint, body)
    assert found is not None and found.startswith(problem), found


def test_a_delta_may_not_carry_content_parts() -> None:
    """The stream's consumers join delta contents as text: a list there is malformed (a message's may be parts)."""
    assert chunk_problem({"choices": [{"delta": {"content": [{"type": "text", "text": "a"}]}}]}) == (
        "choices[0].delta.content is neither text nor null"
    )

"""What an upstream speaking the Responses API natively sends, checked before it is passed through: Response
objects and stream events, their failures, and event types that could break the client's framing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from minigate.providers.base import UpstreamStatusError, UpstreamUnavailable
from minigate.providers.openai_responses import ResponsesReader, checked_response

pytestmark = pytest.mark.fast


def scrub(error: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v).replace("sk-secret", "[redacted]") for k, v in error.items()}


def read(reader: ResponsesReader, event: dict[str, Any]) -> dict[str, Any] | None:
    """The one event the reader passes on for ``event``, None for one it skips."""
    events = reader.read(json.dumps(event).encode())
    assert len(events) <= 1
    return events[0] if events else None


def test_events_pass_until_the_response_completes() -> None:
    reader = ResponsesReader("up", scrub)
    created = {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "output": []}}
    assert read(reader, created) == created and not reader.done
    delta = {"type": "response.output_text.delta", "delta": "Hi", "item_id": "msg_1"}
    assert read(reader, delta) == delta
    assert not reader.read(b"[1, 2]")  # not an event: skipped
    completed = {"type": "response.completed", "response": {"id": "resp_1", "output": [], "usage": {}}}
    assert read(reader, completed) == completed and reader.done and reader.finished


def test_done_ends_a_stream_without_finishing_it() -> None:
    reader = ResponsesReader("up", scrub)
    assert not reader.read(b"[DONE]") and reader.done and not reader.finished


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"{not json", "malformed event"),
        (b'{"delta": "x"}', "no plain type"),
        (b'{"type": "response.output_text.delta\\n\\nevent: x"}', "no plain type"),
        (b'{"type": 5}', "no plain type"),
        (b'{"type": "response.created", "response": "x"}', "without a response"),
        (b'{"type": "response.completed"}', "without a response"),
    ],
)
def test_malformed_events_are_the_deployments_failure(payload: bytes, problem: str) -> None:
    with pytest.raises(UpstreamUnavailable, match=problem) as caught:
        ResponsesReader("up", scrub).read(payload)
    assert caught.value.code == "upstream_malformed" and caught.value.fallback


def test_error_events_and_failed_responses_are_failures() -> None:
    reader = ResponsesReader("up", scrub)
    with pytest.raises(UpstreamStatusError) as caught:
        read(reader, {"type": "error", "code": "server_error", "message": "boom with sk-secret", "param": None})
    assert (caught.value.status, caught.value.message, caught.value.fallback) == (502, "boom with [redacted]", True)
    failed = {"type": "response.failed", "response": {"error": {"code": "rate_limit_exceeded", "message": "slow"}}}
    with pytest.raises(UpstreamStatusError) as caught:
        read(reader, failed)
    assert (caught.value.status, caught.value.message) == (429, "slow")
    with pytest.raises(UpstreamStatusError, match="the upstream's response failed"):
        read(reader, {"type": "response.failed", "response": {"error": None}})


def test_a_json_answer_must_be_a_response() -> None:
    good = {"id": "resp_1", "object": "response", "status": "completed", "output": [{"type": "message"}]}
    assert checked_response("up", good, scrub) is good
    for bad in ([], {"output": "x"}, {"output": ["x"]}):
        with pytest.raises(UpstreamUnavailable, match="malformed answer"):
            checked_response("up", bad, scrub)
    failed = {**good, "status": "failed", "error": {"code": "server_error", "message": "model crashed"}}
    with pytest.raises(UpstreamStatusError, match="model crashed"):
        checked_response("up", failed, scrub)

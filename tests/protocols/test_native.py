"""Pass-through: the request a native Responses deployment is sent, and what the gateway fixes in native answers
(the Response's own fields, sequence numbers, the Messages model name)."""

from __future__ import annotations

from typing import Any

import pytest

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.protocols.native import (
    NativeResponseEvents,
    message_model,
    native_response,
    responses_passthrough,
)
from minigate.gateway.serving.events import Native

pytestmark = pytest.mark.fast


BASE: dict[str, Any] = {
    "id": "resp_gateway",
    "model": "native/m",
    "store": True,
    "previous_response_id": "resp_before",
    "status": "in_progress",
    "output": [],
}


def test_the_request_keeps_the_clients_fields_and_stores_nothing_upstream() -> None:
    raw = {"model": "default", "input": "Hi", "reasoning": {"summary": "auto"}, "include": ["x"], "store": True}
    assert responses_passthrough(raw, None) == {**raw, "store": False}
    assert raw["store"] is True  # the client's body is not changed


def test_a_continued_response_resends_its_history_without_the_stored_ids() -> None:
    history = [
        {"id": "msg_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "A"}]},
        {"id": "rs_1", "type": "reasoning", "summary": []},  # nothing an upstream that keeps nothing can use
        {"id": "rs_2", "type": "reasoning", "summary": [], "encrypted_content": "gAAA"},
        {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]
    raw = {"model": "default", "previous_response_id": "resp_before", "input": "B"}
    body = responses_passthrough(raw, history)
    assert "previous_response_id" not in body and body["store"] is False
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "A"}]},
        {"id": "rs_2", "type": "reasoning", "summary": [], "encrypted_content": "gAAA"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"role": "user", "content": "B"},
    ]
    output = [{"type": "function_call_output", "call_id": "c1", "output": "ok"}]
    assert responses_passthrough({**raw, "input": output}, history)["input"][3:] == output
    assert responses_passthrough({**raw, "input": None}, [])["input"] == []


def test_a_native_response_gets_the_gateways_own_fields() -> None:
    upstream = {"id": "resp_up", "model": "m", "store": False, "previous_response_id": None, "output": [1]}
    assert native_response(upstream, BASE) == {
        "id": "resp_gateway",
        "model": "native/m",
        "store": True,
        "previous_response_id": "resp_before",
        "output": [1],
    }


def test_stream_events_are_numbered_and_their_responses_fixed() -> None:
    stream = NativeResponseEvents(BASE)
    created = stream.event(
        Native("response.created", {"type": "response.created", "sequence_number": 7, "response": {"id": "resp_up"}})
    )
    assert created["sequence_number"] == 0 and created["response"]["id"] == "resp_gateway" and not stream.completed
    delta = stream.event(Native("response.output_text.delta", {"type": "response.output_text.delta", "delta": "x"}))
    assert delta == {"type": "response.output_text.delta", "delta": "x", "sequence_number": 1}
    done = {"type": "response.completed", "response": {"id": "resp_up", "status": "completed", "model": "m"}}
    event = stream.event(Native("response.completed", done))
    assert stream.completed and stream.response == event["response"] and event["response"]["model"] == "native/m"
    assert done["response"]["id"] == "resp_up"  # the upstream's event is not changed in place


def test_a_broken_off_stream_fails_its_latest_response() -> None:
    stream = NativeResponseEvents(BASE)
    stream.event(Native("response.created", {"type": "response.created", "response": {"id": "resp_up", "output": []}}))
    failed = stream.failed(GatewayError("cut", status=429))
    assert failed["type"] == "response.failed" and failed["sequence_number"] == 1
    assert failed["response"]["id"] == "resp_gateway" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "rate_limit_exceeded", "message": "cut"}


def test_message_start_names_the_clients_model() -> None:
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-test", "content": []}}
    assert message_model(Native("message_start", start), "claude-sonnet-4-5")["message"]["model"] == "claude-sonnet-4-5"
    assert start["message"]["model"] == "claude-test"
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}
    assert message_model(Native("content_block_delta", delta), "other") is delta

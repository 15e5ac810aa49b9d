"""The Responses API's answer half: Response objects from chat answers and the event stream from typed events,
each checked against the official ``openai`` SDK's own types (validated, not just constructed)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.protocols.responses import ResponsesRequest
from minigate.gateway.protocols.responses_out import ResponseEvents, from_chat, response_base, usage_of
from minigate.gateway.serving.events import Chunk

pytestmark = pytest.mark.fast

_EVENT = TypeAdapter(ResponseStreamEvent)
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def sdk(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as the client gets it (JSON), after checking it validates as the SDK's Response."""
    wired: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(value))
    Response.model_validate(wired)
    return wired


def base(**request: Any) -> dict[str, Any]:
    request.setdefault("model", "m")
    return response_base(ResponsesRequest(**request), "resp_1", "up/m")


def chat(message: dict[str, Any], finish: str = "stop", usage: Any = USAGE) -> dict[str, Any]:
    return {"model": "up/m", "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}


def delta(finish: str | None = None, **fields: Any) -> Chunk:
    return Chunk({"choices": [{"index": 0, "delta": fields, "finish_reason": finish}]})


def test_text_answer() -> None:
    response = sdk(from_chat(base(), chat({"role": "assistant", "content": "Hello"})))
    assert response["status"] == "completed" and response["incomplete_details"] is None
    assert response["model"] == "up/m" and response["object"] == "response" and response["id"] == "resp_1"
    [item] = response["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["id"].startswith("msg_")
    assert item["content"] == [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]
    assert response["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 10,
    }
    assert Response.model_validate(response).output_text == "Hello"


def test_tool_calls_become_function_call_items_with_the_upstream_ids() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    response = sdk(from_chat(base(), chat({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls")))
    assert [(i["type"], i["call_id"], i["name"], i["arguments"], i["status"]) for i in response["output"]] == [
        ("function_call", "call_1", "f", '{"a":1}', "completed"),
        ("function_call", "call_2", "g", "{}", "completed"),
    ]
    assert all(item["id"].startswith("fc_") for item in response["output"])


def test_length_is_incomplete_for_max_output_tokens() -> None:
    response = sdk(from_chat(base(max_output_tokens=3), chat({"content": "cut"}, "length")))
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete" and response["max_output_tokens"] == 3


def test_the_request_is_echoed() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}]
    fmt = {"type": "json_schema", "name": "p", "schema": {"type": "object"}, "strict": True}
    response = sdk(
        from_chat(
            base(
                instructions="be brief",
                tools=tools,
                tool_choice="required",
                temperature=0.5,
                top_p=0.5,
                metadata={"k": "v"},
                previous_response_id="resp_0",
                parallel_tool_calls=False,
                text={"format": fmt},
                max_output_tokens=9,
                store=False,
                user="u",
            ),
            chat({"content": "{}"}),
        )
    )
    assert {k: response[k] for k in ("instructions", "tools", "tool_choice", "temperature", "top_p")} == {
        "instructions": "be brief",
        "tools": tools,
        "tool_choice": "required",
        "temperature": 0.5,
        "top_p": 0.5,
    }
    assert response["metadata"] == {"k": "v"} and response["previous_response_id"] == "resp_0"
    assert response["parallel_tool_calls"] is False and response["text"] == {"format": fmt}
    assert response["max_output_tokens"] == 9 and response["store"] is False and response["user"] == "u"
    defaults = sdk(from_chat(base(), chat({"content": "x"})))
    assert defaults["tool_choice"] == "auto" and defaults["tools"] == [] and defaults["store"] is True
    assert defaults["text"] == {"format": {"type": "text"}} and defaults["parallel_tool_calls"] is True


def test_usage_details_and_hostile_counts() -> None:
    counts = {
        **USAGE,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    usage = usage_of(counts)
    assert usage is not None
    assert (
        usage["input_tokens_details"]["cached_tokens"] == 4 and usage["output_tokens_details"]["reasoning_tokens"] == 2
    )
    bad = usage_of({"prompt_tokens": -1, "completion_tokens": "x", "prompt_tokens_details": "no"})
    assert bad is not None and bad["input_tokens"] == 0 and bad["output_tokens"] == 0 and bad["total_tokens"] == 0
    assert usage_of(None) is None


def test_odd_answers_make_no_error() -> None:
    for body in ({}, {"choices": []}, {"choices": ["x"]}, {"choices": [{"message": None}]}):
        assert from_chat(base(), body)["output"] == []
    odd = chat({"tool_calls": ["x", {"function": "f"}, {"function": {"name": 5}}]})
    assert sdk(from_chat(base(), odd))["output"][0]["name"] == ""


def events(stream: ResponseEvents, *chunks: Chunk, failure: GatewayError | None = None) -> list[dict[str, Any]]:
    """Every event of an answer made of ``chunks``, checked against the SDK's event types."""
    out = stream.start()
    for chunk in chunks:
        out += stream.chunk(chunk)
    stream.usage(USAGE)
    out += stream.finish(failure)
    wired: list[dict[str, Any]] = msgspec.json.decode(msgspec.json.encode(out))
    for event in wired:
        _EVENT.validate_python(event)
    assert [event["sequence_number"] for event in wired] == list(range(len(wired)))
    return wired


def test_text_stream_order() -> None:
    out = events(
        ResponseEvents(base()),
        delta(role="assistant", content=""),
        delta(content="Hel"),
        delta(content="lo"),
        delta("stop"),
    )
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert out[0]["response"]["status"] == "in_progress" and out[0]["response"]["output"] == []
    added = out[2]
    assert added["item"]["content"] == [] and added["output_index"] == 0
    item_id = added["item"]["id"]
    assert [e["delta"] for e in out[4:6]] == ["Hel", "lo"]
    assert all(e["item_id"] == item_id and e["content_index"] == 0 for e in out[3:8])
    assert out[6]["text"] == "Hello" and out[8]["item"]["content"][0]["text"] == "Hello"
    final = sdk(out[-1]["response"])
    assert final["status"] == "completed" and final["usage"]["total_tokens"] == 10
    assert Response.model_validate(final).output_text == "Hello" and final["output"][0]["id"] == item_id


def test_tool_call_stream() -> None:
    head = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": ""}}
    out = events(
        ResponseEvents(base()),
        delta(content="Let me look."),
        delta(tool_calls=[head]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"q":'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '"x"}'}}]),
        delta("tool_calls"),
    )
    types = [e["type"] for e in out]
    assert types[-7:] == [
        "response.output_item.done",  # the text item closes when the call begins
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = out[types.index("response.output_item.added", 3)]
    assert added["output_index"] == 1 and added["item"]["call_id"] == "call_9" and added["item"]["name"] == "f"
    assert out[-3]["arguments"] == '{"q":"x"}' and out[-2]["item"]["status"] == "completed"
    final = sdk(out[-1]["response"])
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["arguments"] == '{"q":"x"}' and final["output"][1]["id"] == added["item"]["id"]


def test_parallel_calls_interleaved_keep_their_items() -> None:
    out = events(
        ResponseEvents(base()),
        delta(tool_calls=[{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]),
        delta(tool_calls=[{"index": 1, "id": "b", "function": {"name": "g", "arguments": "["}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": "}"}}, {"index": 1, "function": {"arguments": "]"}}]),
        delta("tool_calls"),
    )
    final = sdk(out[-1]["response"])
    assert [(i["call_id"], i["arguments"]) for i in final["output"]] == [("a", "{}"), ("b", "[]")]


def test_a_call_without_an_id_gets_one() -> None:
    out = events(ResponseEvents(base()), delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": "{}"}}]))
    assert out[-1]["response"]["output"][0]["call_id"].startswith("call_")


def test_length_ends_with_response_incomplete() -> None:
    out = events(ResponseEvents(base(max_output_tokens=2)), delta(content="a b"), delta("length"))
    assert out[-1]["type"] == "response.incomplete"
    final = sdk(out[-1]["response"])
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_failure_mid_stream_is_response_failed() -> None:
    failure = GatewayError("The upstream failed mid-stream: reset", status=502, type="upstream_error", code="x")
    out = events(ResponseEvents(base()), delta(content="partial"), failure=failure)
    assert out[-1]["type"] == "response.failed"
    final = sdk(out[-1]["response"])
    assert final["status"] == "failed"
    assert final["error"] == {"code": "server_error", "message": "The upstream failed mid-stream: reset"}
    assert final["output"][0]["status"] == "incomplete"


def test_other_choices_and_empty_chunks_make_no_events() -> None:
    stream = ResponseEvents(base())
    stream.start()
    assert stream.chunk(Chunk({"choices": [{"index": 1, "delta": {"content": "x"}}]})) == []
    assert stream.chunk(Chunk({"choices": []})) == []
    assert stream.chunk(delta(role="assistant")) == []

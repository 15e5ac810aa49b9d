"""A small upstream that speaks OpenAI's Responses API natively (aiohttp, 127.0.0.1 only), beside chat completions:
the upstream of the ``openai`` provider with ``"api": "responses"``.

``POST /v1/responses`` answers a Response object or the event sequence the official SDK parses
(``response.created``, ``response.in_progress``, per item ``response.output_item.added`` ... ``.done``,
``response.completed``), each event with its ``sequence_number``. Like the real API with ``store: false`` it keeps
nothing: a ``previous_response_id`` is a 404, and an input message that names an ``id`` is refused. Chat requests
are answered as :class:`~tests.fakes.upstream.FakeUpstream` answers them. Script :class:`Answer`,
:class:`FailedMidStream` or :class:`~tests.fakes.behaviours.Status` with ``script()``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import wire
from tests.fakes.behaviours import Recorded, Status
from tests.fakes.upstream import FakeUpstream
from tests.fakes.wire import count_words

__all__ = ["Answer", "FailedMidStream", "ResponsesUpstream"]

_FIELDS = {
    "model",
    "input",
    "instructions",
    "previous_response_id",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_output_tokens",
    "temperature",
    "top_p",
    "text",
    "metadata",
    "user",
    "store",
    "stream",
    "reasoning",
    "include",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
    "truncation",
    "stream_options",
}
_ITEM_FIELDS = {
    "message": {"type", "role", "content", "status", "id"},
    "function_call": {"type", "call_id", "name", "arguments", "status", "id"},
    "function_call_output": {"type", "call_id", "output", "status", "id"},
    "reasoning": {"type", "id", "summary", "encrypted_content", "content", "status"},
}


@dataclass(frozen=True)
class Answer:
    """The output: ``text`` (default "Hello from {name}"; none when only ``calls`` are given), then a function
    call per ``(name, arguments)``. ``usage`` is merged over the counted usage (words in, words out)."""

    text: str | None = None
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FailedMidStream:
    """Streamed: ``words`` text deltas (None: none of the output's events at all), then ``response.failed`` with a
    server error, and the body ends."""

    words: int | None = 2


def _problem(body: Any) -> str | None:
    """Why the real API would refuse ``body``, in its words, or None."""
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    if extra := sorted(set(body) - _FIELDS):
        return f"Unknown parameter: '{extra[0]}'."
    if not isinstance(body.get("model"), str):
        return "Missing required parameter: 'model'."
    given = body.get("input")
    if isinstance(given, list):
        for i, item in enumerate(given):
            if not isinstance(item, dict):
                return f"Invalid type for 'input[{i}]': expected an object."
            kind = item.get("type", "message" if "role" in item else None)
            if kind not in _ITEM_FIELDS:
                return f"Invalid value: '{kind}'. Supported values are: {', '.join(_ITEM_FIELDS)}."
            if extra := sorted(set(item) - _ITEM_FIELDS[kind]):
                return f"Unknown parameter: 'input[{i}].{extra[0]}'."
            if kind == "message" and "id" in item and item.get("role") != "assistant":
                return f"Unknown parameter: 'input[{i}].id'."
    elif not isinstance(given, str):
        return "Invalid type for 'input': expected a string or an array."
    return None


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return wire.status(Status(status, {"message": message, "param": param, "code": code}))


class ResponsesUpstream(FakeUpstream):
    """A Responses API (and chat completions) server on 127.0.0.1, recording every request."""

    def app(self) -> web.Application:
        """The chat routes of :class:`FakeUpstream`, and ``POST /v1/responses``."""
        app = super().app()
        app.router.add_post("/v1/responses", self._responses)
        return app

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        with contextlib.suppress(ValueError):
            body = json.loads(await request.read())
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            self._requests.append(Recorded(request.path, request.method, headers, body))
        if self._auth and headers.get("authorization") != self._auth:
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        if problem := _problem(body):
            return _error(400, problem)
        if body.get("previous_response_id") is not None:  # nothing is ever kept here
            found = body["previous_response_id"]
            return _error(404, f"Previous response with id '{found}' not found.", "previous_response_id")
        behaviour = self._pop(body["model"])
        if isinstance(behaviour, Status):
            return wire.status(behaviour)
        answer = behaviour if isinstance(behaviour, Answer) else Answer()
        response = self._response(body, answer)
        if not body.get("stream"):
            return web.json_response(response)
        return await self._stream(request, response, behaviour)

    def _response(self, body: dict[str, Any], answer: Answer) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        text = answer.text if answer.text is not None or answer.calls else f"Hello from {self.name}"
        if text:
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            message = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant"}
            output.append({**message, "status": "completed", "content": [part]})
        for name, arguments in answer.calls:
            call = {"id": f"fc_{uuid.uuid4().hex}", "type": "function_call", "call_id": f"call_{uuid.uuid4().hex[:24]}"}
            output.append({**call, "name": name, "arguments": json.dumps(arguments), "status": "completed"})
        given = body.get("input")
        words_in = count_words([body.get("instructions") or "", given if isinstance(given, str) else given or []])
        words_out = len((text or "").split()) + len(answer.calls)
        usage = {
            "input_tokens": words_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": words_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": words_in + words_out,
            **answer.usage,
        }
        return {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "metadata": body.get("metadata") or {},
        }

    async def _stream(self, request: web.Request, response: dict[str, Any], behaviour: Any) -> web.StreamResponse:
        events: list[dict[str, Any]] = []
        start = {**response, "status": "in_progress", "output": [], "usage": None}
        events += [{"type": "response.created", "response": start}, {"type": "response.in_progress", "response": start}]
        for index, item in enumerate(response["output"]):
            events += _item_events(index, item)
        if isinstance(behaviour, FailedMidStream):
            first = next(i for i, e in enumerate(events) if e["type"] == "response.output_text.delta")
            events = events[: 2 if behaviour.words is None else first + behaviour.words]
            error = {"code": "server_error", "message": "The model failed mid-answer."}
            events.append({"type": "response.failed", "response": {**start, "status": "failed", "error": error}})
        else:
            events.append({"type": "response.completed", "response": response})
        answer = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await answer.prepare(request)
        for number, event in enumerate(events):  # one write per event: the client sees them arrive apart
            event = {"type": event["type"], "sequence_number": number, **event}
            await answer.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await answer.write_eof()
        return answer


def _item_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of one output item, from ``response.output_item.added`` to ``.done``."""
    where = {"item_id": item["id"], "output_index": index}
    if item["type"] == "message":
        part = item["content"][0]
        empty = {**part, "text": ""}
        events = [
            {"type": "response.output_item.added", "output_index": index, "item": {**item, "content": []}},
            {"type": "response.content_part.added", **where, "content_index": 0, "part": empty},
        ]
        words = part["text"].split(" ")
        for i, word in enumerate(words):
            delta = word if i == 0 else " " + word
            events.append({"type": "response.output_text.delta", **where, "content_index": 0, "delta": delta})
        events += [
            {"type": "response.output_text.done", **where, "content_index": 0, "text": part["text"]},
            {"type": "response.content_part.done", **where, "content_index": 0, "part": part},
        ]
    else:
        arguments = item["arguments"]
        half = len(arguments) // 2
        events = [{"type": "response.output_item.added", "output_index": index, "item": {**item, "arguments": ""}}]
        events += [
            {"type": "response.function_call_arguments.delta", **where, "delta": piece}
            for piece in (arguments[:half], arguments[half:])
        ]
        events.append({"type": "response.function_call_arguments.done", **where, "arguments": arguments})
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return events

"""OpenAI's Responses API, the answer half: Response objects from a chat answer, and the Responses event stream
(``response.created`` ... ``response.completed``) from the serving layer's typed events."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.core.tokens import valid_count
from minigate.gateway.protocols.responses import ResponsesRequest, new_id
from minigate.gateway.serving.events import Chunk

__all__ = [
    "DeletedResponse",
    "InputItemList",
    "ResponseEvents",
    "ResponseObject",
    "from_chat",
    "response_base",
    "usage_of",
]

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponseObject(msgspec.Struct, kw_only=True):
    """A Response object as answered (for the OpenAPI document; the answers are built as dicts)."""

    id: str
    object: str
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None


class DeletedResponse(msgspec.Struct, kw_only=True):
    """``DELETE /v1/responses/{id}``."""

    id: str
    object: str
    deleted: bool


class InputItemList(msgspec.Struct, kw_only=True):
    """``GET /v1/responses/{id}/input_items``: a page of a stored response's input items."""

    object: str
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


def response_base(request: ResponsesRequest, response_id: str, model: str) -> dict[str, Any]:
    """The Response object before its answer: ``status`` in_progress, no output, the request's settings echoed."""
    text = dict(request.text) if isinstance(request.text, dict) else {}
    text.setdefault("format", {"type": "text"})
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": request.store is not False,
        "temperature": request.temperature,
        "text": text,
        "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
        "tools": request.tools or [],
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": request.user,
        "metadata": request.metadata or {},
    }


def usage_of(counts: Any) -> dict[str, Any] | None:
    """Chat usage counts as Responses usage (None when the upstream sent none)."""
    if not isinstance(counts, dict):
        return None
    prompt = valid_count(counts.get("prompt_tokens")) or 0
    completion = valid_count(counts.get("completion_tokens")) or 0
    total = valid_count(counts.get("total_tokens")) or prompt + completion
    cached = counts.get("prompt_tokens_details")
    reasoning = counts.get("completion_tokens_details")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": (valid_count(cached.get("cached_tokens")) if isinstance(cached, dict) else None) or 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": (
                valid_count(reasoning.get("reasoning_tokens")) if isinstance(reasoning, dict) else None
            )
            or 0
        },
        "total_tokens": total,
    }


def _finished(response: dict[str, Any], finish_reason: Any, usage: Any) -> dict[str, Any]:
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = usage_of(usage)
    return response


def _text_item(text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": new_id("msg"), "type": "message", "role": "assistant", "status": status, "content": [part]}


def _call_item(call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def from_chat(base: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The finished Response object for a whole chat-completions answer ``body``."""
    response = {**base, "model": body.get("model", base["model"]), "output": []}
    choices = body.get("choices")
    choice = _obj(choices[0]) if isinstance(choices, list) and choices else {}
    message = _obj(choice.get("message"))
    finish = choice.get("finish_reason")
    status = "incomplete" if finish in _INCOMPLETE else "completed"
    if content := _str(message.get("content")):
        response["output"].append(_text_item(content, status))
    for call in message.get("tool_calls") or ():
        function = _obj(call).get("function")
        if not isinstance(function, dict):
            continue
        call_id = _str(call.get("id")) or new_id("call")
        response["output"].append(
            _call_item(call_id, _str(function.get("name")), _str(function.get("arguments")), status)
        )
    return _finished(response, finish, body.get("usage"))


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is an object, else an empty one (upstream answers are read defensively)."""
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class ResponseEvents:
    """The Responses event stream of one answer: feed it the serving layer's events, send what it returns.

    Every event carries its ``type`` and a ``sequence_number`` counting from 0. Text opens a ``message`` item;
    each tool call (by its chat index) a ``function_call`` item; a text item is closed when a call begins.
    """

    def __init__(self, base: dict[str, Any]) -> None:
        """Stream the answer of the Response ``base`` (as :func:`response_base` makes it)."""
        self.response = base
        self._sequence = 0
        self._text: dict[str, Any] | None = None  # the open message item
        self._calls: dict[Any, dict[str, Any]] = {}  # chat tool-call index -> its open function_call item
        self._finish: Any = None
        self._usage: Any = None
        self._at: dict[str, int] = {}  # output item id -> its output_index

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _snapshot(self) -> dict[str, Any]:
        return {**self.response, "output": [dict(item) for item in self.response["output"]]}

    def start(self) -> list[dict[str, Any]]:
        """``response.created`` and ``response.in_progress``."""
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    def _index(self, item: dict[str, Any]) -> int:
        return self._at[item["id"]]

    def _add(self, item: dict[str, Any], shown: dict[str, Any]) -> list[dict[str, Any]]:
        self._at[item["id"]] = len(self.response["output"])
        self.response["output"].append(item)
        return [self._event("response.output_item.added", output_index=self._index(item), item=shown)]

    def _close_text(self, status: str = "completed") -> list[dict[str, Any]]:
        item, self._text = self._text, None
        if item is None:
            return []
        index, part = self._index(item), item["content"][0]
        item["status"] = status
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=part["text"], logprobs=[]),
            self._event("response.content_part.done", **where, part=dict(part)),
            self._event("response.output_item.done", output_index=index, item={**item, "content": [dict(part)]}),
        ]

    def _close_call(self, item: dict[str, Any], status: str) -> list[dict[str, Any]]:
        index = self._index(item)
        item["status"] = status
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            ),
            self._event("response.output_item.done", output_index=index, item=dict(item)),
        ]

    def chunk(self, chunk: Chunk) -> list[dict[str, Any]]:
        """The events of one chat chunk (its first choice: the Responses API has one answer)."""
        choice = next((c for c in chunk.choices() if c.get("index", 0) == 0), None)
        if choice is None:
            return []
        if choice.get("finish_reason") is not None:
            self._finish = choice["finish_reason"]
        delta = _obj(choice.get("delta"))
        events: list[dict[str, Any]] = []
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self._text is None:
                self._text = _text_item("", "in_progress")
                events += self._add(self._text, {**self._text, "content": []})
                where = {"item_id": self._text["id"], "output_index": self._index(self._text), "content_index": 0}
                empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                events.append(self._event("response.content_part.added", **where, part=empty))
            self._text["content"][0]["text"] += content
            where = {"item_id": self._text["id"], "output_index": self._index(self._text), "content_index": 0}
            events.append(self._event("response.output_text.delta", **where, delta=content, logprobs=[]))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events += self._call_delta(call)
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        function = _obj(call.get("function"))
        key = call.get("index", len(self._calls))
        item = self._calls.get(key)
        if item is None:
            events += self._close_text()
            call_id = _str(call.get("id")) or new_id("call")
            item = self._calls[key] = _call_item(call_id, _str(function.get("name")), "", "in_progress")
            events += self._add(item, dict(item))
        elif not item["name"]:
            item["name"] = _str(function.get("name"))
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            item["arguments"] += piece
            index = self._index(item)
            events.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece
                )
            )
        return events

    def usage(self, counts: Any) -> None:
        """Note the answer's token counts (sent with the final response)."""
        self._usage = counts

    def finish(self, failure: GatewayError | None) -> list[dict[str, Any]]:
        """The closing events: open items done, then ``response.completed`` (``response.incomplete`` when the
        answer was cut by ``max_output_tokens``), or ``response.failed`` when the answer broke off. The final
        Response object is :attr:`response` once this has run."""
        if failure is not None:
            for item in self.response["output"]:
                item["status"] = "incomplete"
            self.response["status"] = "failed"
            code = "rate_limit_exceeded" if failure.status == 429 else "server_error"
            self.response["error"] = {"code": code, "message": failure.message}
            self.response["usage"] = usage_of(self._usage)
            return [self._event("response.failed", response=self._snapshot())]
        _finished(self.response, self._finish, self._usage)
        status = self.response["status"]
        events = self._close_text(status)
        for item in list(self._calls.values()):
            events += self._close_call(item, status)
        self._calls.clear()
        return [*events, self._event(f"response.{status}", response=self._snapshot())]

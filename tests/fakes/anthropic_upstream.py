"""A small, real Anthropic Messages API server (aiohttp, 127.0.0.1 only): the upstream of the ``anthropic``
provider's tests.

It checks requests as strictly as the real API does (``x-api-key``, ``anthropic-version``, ``max_tokens``, no
unknown fields, alternating roles, every ``tool_use`` answered by a ``tool_result`` in the next turn and no
other) and answers JSON or the full event sequence (``message_start``, ``ping``, per block
``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``). Script it with the
behaviours below (and :class:`~tests.fakes.behaviours.Delay`) as :class:`~tests.fakes.upstream.FakeUpstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.behaviours import Delay, Recorded
from tests.fakes.upstream import FakeUpstream
from tests.fakes.wire import count_words

__all__ = ["Answer", "AnthropicUpstream", "ErrorEvent", "Failure", "Truncated", "request_problem"]

VERSIONS = ("2023-06-01", "2023-01-01")
_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
}
_BLOCKS = {"user": {"text", "image", "tool_result", "document"}, "assistant": {"text", "tool_use", "thinking"}}
_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class Answer:
    """A message: ``text`` (default "Hello from {name}"; none when only ``calls`` are given and text is None),
    then a ``tool_use`` block per ``(name, input)`` call. ``stop_reason`` defaults to ``tool_use`` with calls,
    else ``end_turn``. ``usage`` is merged over the counted usage (words in, words out). ``thinking`` puts a
    thinking block first. Streamed, text comes a word per delta and each input's JSON in ``pieces`` parts."""

    text: str | None = None
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    stop_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    thinking: str | None = None
    pieces: int = 3


@dataclass(frozen=True)
class Failure:
    """Answer HTTP ``status`` with Anthropic's error body (``type``, ``message``) and ``headers``."""

    status: int
    type: str
    message: str = "fake failure"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorEvent:
    """Streamed: ``words`` text deltas, then an ``error`` event of ``type``, and the body ends."""

    type: str = "overloaded_error"
    message: str = "Overloaded"
    words: int = 2


@dataclass(frozen=True)
class Truncated:
    """Streamed: ``words`` text deltas, then the body ends with no ``message_delta`` or ``message_stop``."""

    words: int = 2


class _Bad(Exception):
    """A request the real API would refuse; the message is where and why, as Anthropic says it."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise _Bad(message)


def _text_block(block: Any, where: str) -> None:
    _check(isinstance(block.get("text"), str), f"{where}.text: Field required")
    _check(bool(block["text"]), f"{where}: text content blocks must be non-empty")


def _image_block(block: dict[str, Any], where: str) -> None:
    source = block.get("source")
    _check(isinstance(source, dict), f"{where}.source: Field required")
    if source.get("type") == "base64":
        _check(source.get("media_type") in ("image/jpeg", "image/png", "image/gif", "image/webp"), f"{where}.source")
        _check(isinstance(source.get("data"), str) and bool(source["data"]), f"{where}.source.data: Field required")
    else:
        _check(source.get("type") == "url" and isinstance(source.get("url"), str), f"{where}.source: bad source")


def _blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    role, content = message.get("role"), message.get("content")
    _check(role in _BLOCKS, f"{where}.role: Input should be 'user' or 'assistant'")
    _check(set(message) <= {"role", "content"}, f"{where}: Extra inputs are not permitted")
    if isinstance(content, str):
        _check(bool(content), f"{where}: all messages must have non-empty content")
        return [{"type": "text", "text": content}]
    _check(isinstance(content, list) and bool(content), f"{where}: all messages must have non-empty content")
    for j, block in enumerate(content):
        here = f"{where}.content.{j}"
        _check(isinstance(block, dict) and block.get("type") in _BLOCKS[role], f"{here}: bad block for {role}")
        kind = block["type"]
        if kind == "text":
            _text_block(block, here)
        elif kind == "image":
            _image_block(block, here)
        elif kind == "tool_use":
            _check(isinstance(block.get("id"), str) and bool(_ID.match(block["id"])), f"{here}.id: bad id")
            _check(isinstance(block.get("name"), str), f"{here}.name: Field required")
            _check(isinstance(block.get("input"), dict), f"{here}.input: Input should be a valid dictionary")
        elif kind == "tool_result":
            _check(isinstance(block.get("tool_use_id"), str), f"{here}.tool_use_id: Field required")
            inner = block.get("content", "")
            if isinstance(inner, list):
                for k, part in enumerate(inner):
                    _check(isinstance(part, dict) and part.get("type") in ("text", "image"), f"{here}.content.{k}")
                    (_text_block if part["type"] == "text" else _image_block)(part, f"{here}.content.{k}")
            else:
                _check(isinstance(inner, str), f"{here}.content: Input should be a valid string or list")
    return content


def _messages(messages: Any) -> None:
    _check(isinstance(messages, list) and bool(messages), "messages: Field required (at least one message)")
    previous_calls: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        _check(isinstance(message, dict), f"{where}: Input should be a valid dictionary")
        blocks = _blocks(message, where)
        if i == 0:
            _check(message["role"] == "user", "messages: the first message must use the user role")
        else:
            _check(
                message["role"] != messages[i - 1]["role"], "messages: roles must alternate between user and assistant"
            )
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        stray = [r for r in results if r not in previous_calls]
        _check(not stray, f"{where}: unexpected tool_use_id found in tool_result blocks: {', '.join(stray)}")
        missing = [c for c in previous_calls if c not in results]
        _check(not missing, f"{where}: tool_use ids were found without tool_result blocks immediately after: {missing}")
        leading = [b["type"] == "tool_result" for b in blocks]
        _check(leading == sorted(leading, reverse=True), f"{where}: tool_result blocks must come first")
        previous_calls = [b["id"] for b in blocks if b["type"] == "tool_use"]


def _tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        _check(isinstance(tools, list), "tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            _check(
                isinstance(tool, dict) and set(tool) <= {"name", "description", "input_schema", "cache_control"},
                f"tools.{i}",
            )
            _check(isinstance(tool.get("name"), str) and bool(_NAME.match(tool["name"])), f"tools.{i}.name: bad name")
            schema = tool.get("input_schema")
            _check(isinstance(schema, dict) and schema.get("type") == "object", f"tools.{i}.input_schema.type")
    choice = body.get("tool_choice")
    if choice is not None:
        _check(bool(tools), "tool_choice may only be specified while providing tools")
        _check(isinstance(choice, dict) and choice.get("type") in ("auto", "any", "tool", "none"), "tool_choice.type")
        _check(choice["type"] != "tool" or isinstance(choice.get("name"), str), "tool_choice.name: Field required")
        _check(set(choice) <= {"type", "name", "disable_parallel_tool_use"}, "tool_choice: Extra inputs")


def request_problem(body: Any) -> str | None:
    """Why the real API would refuse ``body`` (a message in its words), or None."""
    try:
        _check(isinstance(body, dict), "the body must be a JSON object")
        extra = sorted(set(body) - _FIELDS)
        _check(not extra, f"{', '.join(extra)}: Extra inputs are not permitted")
        _check(isinstance(body.get("model"), str) and bool(body["model"]), "model: Field required")
        limit = body.get("max_tokens")
        _check(type(limit) is int and limit >= 1, "max_tokens: Field required (an integer of at least 1)")
        system = body.get("system")
        if isinstance(system, list):
            for i, block in enumerate(system):
                _check(isinstance(block, dict) and block.get("type") == "text", f"system.{i}: text blocks only")
                _text_block(block, f"system.{i}")
        else:
            _check(system is None or isinstance(system, str), "system: Input should be text or a list of blocks")
        _messages(body.get("messages"))
        _tools(body)
        for key, top in (("temperature", 1.0), ("top_p", 1.0)):
            value = body.get(key)
            _check(value is None or (isinstance(value, int | float) and 0 <= value <= top), f"{key}: out of range")
        _check(body.get("top_k") is None or (type(body["top_k"]) is int and body["top_k"] >= 0), "top_k")
        stops = body.get("stop_sequences")
        _check(stops is None or (isinstance(stops, list) and all(isinstance(s, str) for s in stops)), "stop_sequences")
        metadata = body.get("metadata")
        _check(metadata is None or (isinstance(metadata, dict) and set(metadata) <= {"user_id"}), "metadata")
        _check(body.get("stream") in (None, True, False), "stream: Input should be a valid boolean")
    except _Bad as bad:
        return str(bad)
    return None


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"type": "error", "error": {"type": kind, "message": message}})
    return web.Response(status=status, body=body.encode(), content_type="application/json", headers=headers)


def _frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


class AnthropicUpstream(FakeUpstream):
    """A Messages API server on 127.0.0.1 with scripted answers and faults, recording every request.

    ``url`` is the base URL including ``/v1`` (the provider's ``endpoint``); requests need ``x-api-key`` equal
    to ``api_key`` when one is given. ``script()`` queues :class:`Answer`, :class:`Failure`, :class:`ErrorEvent`,
    :class:`Truncated` or ``Delay``; the default is ``Answer()``.
    """

    def __init__(self, name: str = "claude", *, api_key: str | None = None) -> None:
        super().__init__(name, api_key=api_key)
        self._default = Answer()

    def reset(self) -> None:
        """Forget recorded requests and queued scripts; the default answer is ``Answer()`` again."""
        super().reset()
        self._default = Answer()

    def app(self) -> web.Application:
        """The aiohttp application: ``POST /v1/messages``."""
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        return app

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        with contextlib.suppress(ValueError):
            body = json.loads(await request.read())
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = Recorded(request.path, request.method, headers, body if isinstance(body, dict) else None)
        with self._lock:
            self._requests.append(record)
        if self.api_key and headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if headers.get("anthropic-version") not in VERSIONS:
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if not headers.get("content-type", "").startswith("application/json"):
            return _error(400, "invalid_request_error", "content-type must be application/json")
        if problem := request_problem(body):
            return _error(400, "invalid_request_error", problem)
        behaviour = self._pop(body["model"])
        while isinstance(behaviour, Delay):
            await asyncio.sleep(behaviour.seconds)
            behaviour = Answer() if behaviour.then is None else behaviour.then
        if isinstance(behaviour, Failure):
            return _error(behaviour.status, behaviour.type, behaviour.message, behaviour.headers)
        if not body.get("stream"):
            answer = behaviour if isinstance(behaviour, Answer) else Answer()
            return web.json_response(self._message(body, answer))
        return await self._stream(request, body, behaviour)

    def _blocks(self, answer: Answer) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if answer.thinking:
            blocks.append({"type": "thinking", "thinking": answer.thinking, "signature": "sig"})
        text = answer.text if answer.text is not None or answer.calls else f"Hello from {self.name}"
        if text:
            blocks.append({"type": "text", "text": text})
        for name, arguments in answer.calls:
            blocks.append(
                {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": name, "input": arguments}
            )
        return blocks

    def _message(self, body: dict[str, Any], answer: Answer) -> dict[str, Any]:
        blocks = self._blocks(answer)
        words = sum(len(b["text"].split()) for b in blocks if b["type"] == "text") + len(answer.calls)
        usage = {"input_tokens": count_words([body.get("system") or "", *body["messages"]]), "output_tokens": words}
        usage.update(answer.usage)
        stop = answer.stop_reason or ("tool_use" if answer.calls else "end_turn")
        sequence = (body.get("stop_sequences") or [None])[0] if stop == "stop_sequence" else None
        message = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant"}
        message.update(model=body["model"], content=blocks, stop_reason=stop, stop_sequence=sequence, usage=usage)
        return message

    async def _stream(self, request: web.Request, body: dict[str, Any], behaviour: Any) -> web.StreamResponse:
        answer = behaviour if isinstance(behaviour, Answer) else Answer(text=" ".join(f"w{i}" for i in range(9)))
        message = self._message(body, answer)
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await response.prepare(request)
        usage = message["usage"]
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        out = [_frame({"type": "message_start", "message": start}), _frame({"type": "ping"})]
        for index, block in enumerate(message["content"]):
            out += self._block_frames(index, block, answer.pieces)
            out.append(_frame({"type": "ping"}))  # pings may come anywhere
        if isinstance(behaviour, (ErrorEvent, Truncated)):
            first = next(i for i, frame in enumerate(out) if b"text_delta" in frame)
            out = out[: first + behaviour.words]  # the start frames, then that many text deltas
            if isinstance(behaviour, ErrorEvent):
                error = {"type": behaviour.type, "message": behaviour.message}
                out.append(_frame({"type": "error", "error": error}))
        else:
            delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
            out.append(
                _frame({"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage["output_tokens"]}})
            )
            out.append(_frame({"type": "message_stop"}))
        for frame in out:  # one write per frame: the client sees the events arrive apart
            await response.write(frame)
        await response.write_eof()
        return response

    def _block_frames(self, index: int, block: dict[str, Any], pieces: int) -> list[bytes]:
        kind = block["type"]
        if kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": w if i == 0 else " " + w} for i, w in enumerate(words)]
        elif kind == "tool_use":
            start = {**block, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in _split(json.dumps(block["input"]), pieces)
            ]
        else:
            start = {"type": "thinking", "thinking": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": "sig"},
            ]
        frames = [_frame({"type": "content_block_start", "index": index, "content_block": start})]
        frames += [_frame({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        frames.append(_frame({"type": "content_block_stop", "index": index}))
        return frames

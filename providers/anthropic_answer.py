"""Anthropic Messages answers as chat completions: a whole message, the events of a stream, usage and errors.

Pure translation; what does not have the shape the Messages API documents raises :class:`Malformed`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from minigate.gateway.core.tokens import valid_count
from minigate.providers.base import UpstreamStatusError

__all__ = ["ERROR_STATUS", "FINISH_REASONS", "ChunkMaker", "Malformed", "chat_completion", "chat_usage", "status_error"]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The HTTP status of each error type, for an ``error`` event in a stream (which has none of its own).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_CONTEXT_MARKERS = ("prompt is too long", "exceed context limit", "context window")


class Malformed(Exception):
    """An answer or event that does not have the Messages API's shape; the message says what is wrong."""


def status_error(status: int, error: dict[str, Any], retry_after: float | None = None) -> UpstreamStatusError:
    """The failure for an Anthropic error (its ``error`` object, already cut and scrubbed) with ``status``.

    A prompt that does not fit is named ``context_length_exceeded``, as OpenAI names it, so it falls back
    without a cooldown like any context-length refusal.
    """
    message = str(error.get("message") or "").lower()
    if status in (400, 413) and any(marker in message for marker in _CONTEXT_MARKERS):
        error = {**error, "code": "context_length_exceeded"}
    return UpstreamStatusError(status, error, retry_after=retry_after)


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Anthropic's usage as OpenAI's: the prompt counts cached and cache-written input tokens too."""
    if not isinstance(usage, dict):
        return None
    given, output = valid_count(usage.get("input_tokens")), valid_count(usage.get("output_tokens"))
    cached = valid_count(usage.get("cache_read_input_tokens")) or 0
    written = valid_count(usage.get("cache_creation_input_tokens")) or 0
    out: dict[str, Any] = {}
    if given is not None:
        out["prompt_tokens"] = given + cached + written
    if output is not None:
        out["completion_tokens"] = output
    if given is not None and output is not None:
        out["total_tokens"] = out["prompt_tokens"] + output
    out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def _finish(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{where} is not text")
    return value


def _call(block: dict[str, Any], where: str) -> dict[str, Any]:
    name, ident = _text(block.get("name"), f"{where}.name"), _text(block.get("id"), f"{where}.id")
    arguments = msgspec.json.encode(block.get("input", {})).decode()
    return {"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}


def chat_completion(message: Any, model: str) -> dict[str, Any]:
    """A whole Messages answer as a ``chat.completion``; thinking and server-tool blocks are left out."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise Malformed("the answer has no content list")
    texts, calls = [], []
    for i, block in enumerate(message["content"]):
        if not isinstance(block, dict):
            raise Malformed(f"content[{i}] is not an object")
        if block.get("type") == "text":
            texts.append(_text(block.get("text"), f"content[{i}].text"))
        elif block.get("type") == "tool_use":
            calls.append(_call(block, f"content[{i}]"))
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        reply["tool_calls"] = calls
    ident = message.get("id")
    answer: dict[str, Any] = {
        "id": ident if isinstance(ident, str) else f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model") if isinstance(message.get("model"), str) else model,
        "choices": [
            {"index": 0, "message": reply, "logprobs": None, "finish_reason": _finish(message.get("stop_reason"))}
        ],
    }
    if (usage := chat_usage(message.get("usage"))) is not None:
        answer["usage"] = usage
    return answer


class ChunkMaker:
    """Turns a stream's events, in order, into ``chat.completion.chunk`` dicts (as an OpenAI stream has them).

    The role chunk comes from ``message_start``; text and tool-call deltas from the content blocks (a call's id
    and name first, then its arguments in the pieces ``input_json_delta`` sends); the finish chunk from
    ``message_delta``; the usage chunk (with ``include_usage``) at ``message_stop``. ``ping``, thinking and
    unknown events make nothing. ``error`` events are the caller's: they are failures, not chunks.
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.base: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.calls: dict[Any, int] = {}  # a tool_use block's index -> its tool call's index
        self.usage: dict[str, Any] = {}
        self.finished = False  # message_delta gave the stop reason
        self.stopped = False  # message_stop: nothing more comes

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):  # message_delta's counts are running totals: the later ones win
            self.usage.update((k, v) for k, v in usage.items() if v is not None)

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks one event makes."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, dict):
                raise Malformed("message_start without a message")
            if isinstance(message.get("id"), str):
                self.base["id"] = message["id"]
            self._merge_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block")
            if not isinstance(block, dict):
                raise Malformed("content_block_start without a content_block")
            if block.get("type") == "tool_use":
                ident, name = _text(block.get("id"), "tool_use.id"), _text(block.get("name"), "tool_use.name")
                index = self.calls[event.get("index")] = len(self.calls)
                call = {"index": index, "id": ident, "type": "function", "function": {"name": name, "arguments": ""}}
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and (text := _text(block.get("text", ""), "content_block.text")):
                return [self._chunk({"content": text})]
            return []
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "message_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                raise Malformed("message_delta without a delta")
            self._merge_usage(event.get("usage"))
            self.finished = True
            return [self._chunk({}, _finish(delta.get("stop_reason")))]
        if kind == "message_stop":
            if not self.finished:
                raise Malformed("message_stop before message_delta gave a stop reason")
            self.stopped = True
            return self.end()
        return []  # ping, content_block_stop, and event types added later

    def _delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            raise Malformed("content_block_delta without a delta")
        if delta.get("type") == "text_delta":
            text = _text(delta.get("text"), "text_delta.text")
            return [self._chunk({"content": text})] if text else []
        if delta.get("type") == "input_json_delta":
            index = self.calls.get(event.get("index"))
            if index is None:
                raise Malformed("input_json_delta for a block that is not a tool_use")
            piece = _text(delta.get("partial_json"), "input_json_delta.partial_json")
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})] if piece else []
        return []  # thinking, signatures, citations: nothing a chat completion carries

    def end(self) -> list[dict[str, Any]]:
        """The usage chunk, when asked for and not sent yet; call it once the stream is over."""
        if not self.include_usage or not self.finished:
            return []
        self.include_usage = False
        return [{**self.base, "choices": [], "usage": chat_usage(self.usage)}]

"""Anthropic's Messages API, the answer half: a chat completion as a ``message`` object, and a chat stream's typed
events as Anthropic's stream events (``message_start`` ... ``message_stop``). The request half is
:mod:`minigate.gateway.protocols.anthropic`."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from minigate.gateway.core.errors import GatewayError, anthropic_error_body
from minigate.gateway.core.sse import named_frame
from minigate.gateway.serving.events import Chunk, Outcome

__all__ = [
    "MessageObject",
    "MessageStream",
    "TokenCount",
    "error_frame",
    "message_from_chat",
    "new_id",
    "stop_reason",
    "usage_from_chat",
]

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
PING_AFTER = 10.0  # seconds without a frame (a long tool call being gathered) before a ping keeps the stream alive


class MessageObject(msgspec.Struct, kw_only=True):
    """The answer of ``POST /v1/messages`` (for the OpenAPI document; built as a dict by :func:`message_from_chat`)."""

    id: str
    type: str = "message"
    role: str = "assistant"
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None
    stop_sequence: str | None
    usage: dict[str, int]


class TokenCount(msgspec.Struct, kw_only=True):
    """The answer of ``POST /v1/messages/count_tokens``."""

    input_tokens: int


def new_id(prefix: str) -> str:
    """A fresh id in Anthropic's style (``msg_...``, ``toolu_...``)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def stop_reason(finish_reason: Any, matched: Any, stop_sequences: list[str], tool_use: bool) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for a chat ``finish_reason``.

    Chat completions do not say which stop string ended an answer; some servers (vLLM) name it in the choice's
    ``stop_reason`` (``matched``). Without that, an answer ending with ``"stop"`` is ``end_turn``: the model may
    as well have ended on its own, and claiming a stop sequence that was never seen would be worse.
    """
    if tool_use:
        return "tool_use", None
    if finish_reason == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish_reason, "end_turn"), None


def usage_from_chat(usage: Any) -> dict[str, int]:
    """Anthropic's usage from chat usage: cached prompt tokens are ``cache_read_input_tokens``, the rest input."""
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    details = usage.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    cached = min(cached, prompt) if isinstance(cached, int) else 0
    return {
        "input_tokens": prompt - cached,
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments (JSON text) as ``input``: a JSON object, else empty (Anthropic's ``input`` is always
    an object; a model that wrote something else gets an empty input, and the client's own check of the tool's
    schema tells it what is missing)."""
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # text parts, as some servers answer
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def message_from_chat(body: dict[str, Any], model: str, stop_sequences: list[str]) -> dict[str, Any]:
    """The Messages API answer for a chat completion; ``model`` is the name the client asked for."""
    choices = body.get("choices") or [{}]
    choice: dict[str, Any] = choices[0] if isinstance(choices[0], dict) else {}
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    text = _text(message.get("content")) or (message.get("refusal") if isinstance(message.get("refusal"), str) else "")
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        block = {"type": "tool_use", "id": call.get("id") or new_id("toolu"), "name": function.get("name") or ""}
        content.append({**block, "input": _input(function.get("arguments"))})
    tool_use = any(block["type"] == "tool_use" for block in content)
    reason, sequence = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences, tool_use)
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_from_chat(body.get("usage")),
    }


@dataclass(slots=True)
class _ToolCall:
    """A tool call being gathered: its arguments are sent whole, as one ``input_json_delta``, once complete."""

    block: int
    id: str
    arguments: list[str] = field(default_factory=list)


class MessageStream:
    """One streamed answer's Anthropic events, from the chat stream's typed events.

    Text is relayed as it comes. A tool call's block starts when the call is first named; its arguments are
    gathered and sent as one ``input_json_delta`` when the block ends, checked to be a JSON object (the SDKs parse
    every partial delta and fail on text that cannot become JSON; a model's broken arguments become ``{}``).
    OpenAI-compatible servers send tool calls one after another, as this expects.
    """

    def __init__(self, model: str, stop_sequences: list[str], input_estimate: int = 0) -> None:
        self.model, self.stop_sequences = model, stop_sequences
        self.input_estimate = input_estimate
        self.blocks = 0  # content blocks started so far
        self.text: int | None = None  # the open text block's index
        self.tool: _ToolCall | None = None  # the open tool_use block
        self.calls: dict[Any, _ToolCall] = {}  # by the chat tool call's index: the latest call there
        self.finish: Any = None
        self.matched: Any = None
        self.usage: Any = None
        self.last = time.monotonic()

    def start(self) -> bytes:
        """``message_start`` (its input tokens estimated: the count is known only at the end) and a ``ping``."""
        usage = {**usage_from_chat(None), "input_tokens": self.input_estimate}
        message: dict[str, Any] = {
            "id": new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return named_frame("message_start", {"type": "message_start", "message": message}) + named_frame(
            "ping", {"type": "ping"}
        )

    def chunk(self, chunk: Chunk) -> bytes:
        """The frames for one chat chunk (its first choice: a Messages answer has one)."""
        choices = chunk.choices()
        out: list[bytes] = []
        if choices and choices[0].get("index", 0) == 0:
            choice = choices[0]
            delta = choice.get("delta") or {}
            if isinstance(text := delta.get("content"), str) and text:
                out += self._text(text)
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish, self.matched = choice["finish_reason"], choice.get("stop_reason")
        now = time.monotonic()
        if out:
            self.last = now
        elif now - self.last > PING_AFTER:
            self.last = now
            out.append(named_frame("ping", {"type": "ping"}))
        return b"".join(out)

    def _close(self) -> list[bytes]:
        out = []
        if self.text is not None:
            out.append(_block_stop(self.text))
            self.text = None
        if (tool := self.tool) is not None:
            partial = json.dumps(_input("".join(tool.arguments)), ensure_ascii=False)
            delta = {"type": "input_json_delta", "partial_json": partial}
            event = {"type": "content_block_delta", "index": tool.block, "delta": delta}
            out += [named_frame("content_block_delta", event), _block_stop(tool.block)]
            self.tool = None
        return out

    def _open(self, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        event = {"type": "content_block_start", "index": self.blocks, "content_block": block}
        out.append(named_frame("content_block_start", event))
        self.blocks += 1
        return out

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self.text is None:
            out = self._open({"type": "text", "text": ""})
            self.text = self.blocks - 1
        event = {"type": "content_block_delta", "index": self.text, "delta": {"type": "text_delta", "text": text}}
        out.append(named_frame("content_block_delta", event))
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index, call_id = call.get("index", 0), call.get("id")
        function = call.get("function") or {}
        tool = self.calls.get(index)
        # A new id at an index already used is a call of its own (some servers send every call at index 0).
        if tool is None or (call_id and call_id != tool.id):
            block = {"type": "tool_use", "id": call_id or new_id("toolu"), "name": function.get("name") or ""}
            out = self._open({**block, "input": {}})
            tool = self.calls[index] = self.tool = _ToolCall(self.blocks - 1, block["id"])
        if isinstance(arguments := function.get("arguments"), str):
            tool.arguments.append(arguments)
        return out

    def end(self, outcome: Outcome) -> bytes:
        """The closing events: the open block's end, ``message_delta`` and ``message_stop``, or the ``error`` event
        that ended the answer."""
        if outcome.failure is not None:
            return error_frame(outcome.failure)
        out = self._close()
        reason, sequence = stop_reason(self.finish, self.matched, self.stop_sequences, bool(self.calls))
        usage = usage_from_chat(self.usage)
        delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage}
        out += [named_frame("message_delta", delta), named_frame("message_stop", {"type": "message_stop"})]
        return b"".join(out)


def _block_stop(index: int) -> bytes:
    return named_frame("content_block_stop", {"type": "content_block_stop", "index": index})


def error_frame(error: GatewayError) -> bytes:
    """An ``error`` event in Anthropic's shape."""
    return named_frame("error", anthropic_error_body(error.status, error.message))

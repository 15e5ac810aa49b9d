"""Tool calls in a local model's output: found in the formats models write them in, whole or as it streams.

Formats: Hermes/Qwen ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks anywhere in the text
(several allowed), and, as the whole answer, Llama 3 JSON ``{"name": ..., "parameters": {...}}`` (after an
optional ``<|python_tag|>``), plain JSON objects with ``name`` and ``arguments``, a JSON list of them (after an
optional ``[TOOL_CALLS]``) or one of these in a ```` ```json ```` fence. Only the names of the request's tools
count as calls; anything else stays text.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["ToolCall", "ToolCallParser", "parse_tool_calls"]

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_PREFIXES = ("<|python_tag|>", "[TOOL_CALLS]")
_FENCE_OPEN = re.compile(r"```(?:json)?\s*(?=[{\[])")
_FENCE_START = re.compile(r"```(?:json)?\s*\Z|```(?:json)?\s*[{\[]")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 is valid JSON, but would be sent on as Infinity, which is not
        raise ValueError(f"number {text} is out of range")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_float=_finite, parse_constant=_not_json)


@dataclass(slots=True)
class ToolCall:
    """One call found in the output: the tool's name and its arguments as a JSON object's text."""

    name: str
    arguments: str
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"call_{uuid.uuid4().hex[:24]}"

    def message(self) -> dict[str, Any]:
        """The call as an OpenAI ``tool_calls`` entry of a message."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def deltas(self, index: int) -> list[dict[str, Any]]:
        """The call as two streamed ``tool_calls`` deltas: id, type and name first, then the arguments."""
        return [
            {"index": index, "id": self.id, "type": "function", "function": {"name": self.name, "arguments": ""}},
            {"index": index, "function": {"arguments": self.arguments}},
        ]


def _as_call(value: Any, names: Collection[str], *, need_arguments: bool) -> ToolCall | None:
    """The call a decoded JSON value stands for, or None."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or value["name"] not in names:
        return None
    key = "arguments" if "arguments" in value else "parameters"
    if key not in value:
        if need_arguments:
            return None
        arguments: Any = {}
    else:
        arguments = value[key]
    if isinstance(arguments, str):  # some models write the arguments as a JSON string, as the API does
        try:
            arguments = _decoder.decode(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(value["name"], json.dumps(arguments, ensure_ascii=False))


def _leading_calls(text: str, names: Collection[str]) -> tuple[list[ToolCall], str] | None:
    """The calls a JSON answer opens with (objects or lists of them, separated by blanks or ``;``, after an
    optional prefix, in an optional fence) and the text after them; None if it does not open with a call."""
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :].lstrip()
    rest = ""
    if fence := _FENCE_OPEN.match(text):
        close = text.find("```", fence.end())
        inner = text[fence.end() :] if close < 0 else text[fence.end() : close]
        rest = "" if close < 0 else text[close + 3 :]
    else:
        inner = text
    calls: list[ToolCall] = []
    pos = 0
    while True:
        while pos < len(inner) and (inner[pos].isspace() or inner[pos] == ";"):
            pos += 1
        try:
            value, end = _decoder.raw_decode(inner, pos)
        except ValueError:
            break
        found = [_as_call(item, names, need_arguments=True) for item in (value if isinstance(value, list) else [value])]
        if not found or None in found:
            break
        calls.extend(c for c in found if c is not None)
        pos = end
    if not calls:
        return None
    return calls, inner[pos:] + rest


def _first_value_end(text: str) -> int | None:
    """Where the first JSON object or list in ``text`` ends (brackets counted outside strings), or None."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth <= 0:
                return i + 1
    return None


def _json_start(text: str) -> str | None:
    """What follows the optional prefix and fence opening, if ``text`` may still become a JSON answer, or None.

    ``""`` means "nothing decisive yet": keep waiting.
    """
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :].lstrip()
        elif prefix.startswith(text):
            return ""
    if text.startswith("```"):
        if not _FENCE_START.match(text):
            return "" if "```json".startswith(text) or text == "```" else None
        text = text[3:].removeprefix("json").lstrip()
    elif "```".startswith(text):
        return ""
    if not text:
        return ""
    return text if text[0] in "{[" else None


class ToolCallParser:
    """Splits a model's output, fed in pieces, into text to send on and tool calls.

    Text that could still be part of a call is held back: the whole answer while it may be a JSON call (it
    starts with ``{``, ``[``, a prefix or a fence), and any tail that may be the start of ``<tool_call>``.
    """

    def __init__(self, names: Collection[str]) -> None:
        self.names = names
        self.calls: list[ToolCall] = []
        self._buffer = ""
        self._mode = "start"  # start: nothing but blanks yet; json: the answer may be a JSON call; text; call

    def feed(self, text: str) -> list[str | ToolCall]:
        """Add output; return what can be sent on now, in order: text pieces and calls."""
        self._buffer += text
        return self._run(final=False)

    def finish(self) -> list[str | ToolCall]:
        """The rest, at the end of the output: held text is released, an unclosed ``<tool_call>`` tried."""
        return self._run(final=True)

    def _run(self, *, final: bool) -> list[str | ToolCall]:
        out: list[str | ToolCall] = []
        while True:  # each round consumes text or moves on a mode, so this ends
            before = (self._mode, len(self._buffer))
            self._advance(out, final=final)
            if (self._mode, len(self._buffer)) == before:
                return out

    def _emit(self, out: list[str | ToolCall], item: str | ToolCall) -> None:
        if isinstance(item, ToolCall):
            self.calls.append(item)
            out.append(item)
        elif item:
            out.append(item)

    def _advance(self, out: list[str | ToolCall], *, final: bool) -> None:
        buffer = self._buffer
        if self._mode == "start":
            stripped = buffer.lstrip()
            if not stripped and not final:
                return
            start = _json_start(stripped) if stripped else None
            if start == "" and not final:
                return
            self._mode = "json" if start else "text"
        elif self._mode == "json":
            self._advance_json(out, final)
        elif self._mode == "text":
            at = buffer.find(_OPEN)
            if at >= 0:
                self._emit(out, buffer[:at])
                self._buffer = buffer[at:]
                self._mode = "call"
                return
            keep = 0 if final else next((k for k in range(len(_OPEN) - 1, 0, -1) if buffer.endswith(_OPEN[:k])), 0)
            self._emit(out, buffer[: len(buffer) - keep])
            self._buffer = buffer[len(buffer) - keep :]
        else:  # inside <tool_call>
            end = buffer.find(_CLOSE)
            if end < 0 and not final:
                return
            block = buffer if end < 0 else buffer[: end + len(_CLOSE)]
            body = block[len(_OPEN) : None if end < 0 else end].strip()
            try:
                call = _as_call(_decoder.decode(body), self.names, need_arguments=False)
            except ValueError:
                call = None
            self._emit(out, call or block)
            self._buffer = buffer[len(block) :]
            self._mode = "text"

    def _advance_json(self, out: list[str | ToolCall], final: bool) -> None:
        """The answer may be a JSON call: decide once its first value is complete, send the calls at the end."""
        stripped = self._buffer.lstrip()
        start = _json_start(stripped)
        if start is None:
            self._mode = "text"
            return
        if not final:
            if (end := _first_value_end(start)) is not None and _leading_calls(
                stripped[: len(stripped) - len(start) + end], self.names
            ) is None:
                self._mode = "text"  # a JSON answer, not a call: send it on as it comes
            return  # a call so far: hold the rest until the end, which may add more calls
        found = _leading_calls(stripped, self.names)
        if found is None:
            self._mode = "text"
            return
        for call in found[0]:
            self._emit(out, call)
        self._buffer = found[1]
        self._mode = "text"


def parse_tool_calls(text: str, names: Collection[str]) -> tuple[str, list[ToolCall]]:
    """A whole answer's text outside the calls, and its calls."""
    parser = ToolCallParser(names)
    parts = parser.feed(text) + parser.finish()
    return "".join(p for p in parts if isinstance(p, str)), parser.calls

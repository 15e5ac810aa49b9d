"""A chat-completions chunk read from its JSON bytes by one typed decode, without building it: its shape checked as
``providers/shape.py`` checks a chunk, whether it generated anything, whether it finished, its ``model`` as sent.

What it does not take (usage, an error, ``[DONE]``, anything that is not an object of that shape) is left to the
reader's whole parse, which decides.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["ChunkScan", "scan_chunk"]


class _Delta(msgspec.Struct, gc=False):  # gc=False: decoded JSON holds no cycles; nothing to track
    content: str | None = None
    role: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    reasoning_content: Any = None


class _Choice(msgspec.Struct, gc=False):
    index: int = 0
    finish_reason: str | None = None
    text: str | None = None
    delta: _Delta | None = None


_NONE = msgspec.Raw(b"")


class ChunkScan(msgspec.Struct, gc=False):
    """What the relay needs of one chunk; ``model`` is its value's JSON exactly as sent (empty when absent)."""

    model: msgspec.Raw = _NONE
    choices: list[_Choice] | None = None

    def generates(self) -> int:
        """1 when the chunk carries generated output (text, content, tool calls or reasoning), else 0."""
        for c in self.choices or ():
            if c.text:
                return 1
            if (d := c.delta) is not None and (d.content or d.tool_calls or d.reasoning_content):
                return 1
        return 0

    def finished(self) -> bool:
        """Whether a choice of the chunk has a finish reason."""
        return any(c.finish_reason for c in self.choices or ())


_decode = msgspec.json.Decoder(ChunkScan).decode
_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)


def scan_chunk(data: bytes) -> ChunkScan | None:
    """``data`` (one ``data:`` payload) read as a chunk; None when it needs the whole parse: it may carry usage or
    an error, is not a JSON object of a chunk's shape (types checked as strictly as ``chunk_problem``), or could not
    be passed on as one SSE line as it is (a carriage return between its tokens would end the line)."""
    if data[:1] != b"{" or b'"usage"' in data or b'"error"' in data or b"\r" in data:
        return None
    try:
        return _decode(data)
    except _ERRORS:
        return None

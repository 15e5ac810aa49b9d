"""The pipe protocol between the gateway and a model's worker process: length-prefixed msgpack maps.

Each map has ``op`` (gateway -> worker) or ``ev`` (worker -> gateway); the frames are listed in
docs/architecture.md, "Local models".
"""

from __future__ import annotations

import os
import struct
from typing import Any, TypedDict

import msgspec

__all__ = ["FrameReader", "GenRequest", "encode_frame", "write_all"]


class GenRequest(TypedDict, total=False):
    """What a ``gen`` frame asks for (``op`` and ``id`` are added when it is sent)."""

    # Chat: role and content, plus tool_calls (arguments as an object when they are one) on assistant turns and
    # tool_call_id and name on tool turns. The legacy completions endpoint sends a prompt instead.
    messages: list[dict[str, Any]]
    prompt: str
    tools: list[dict[str, Any]]  # OpenAI function tools, rendered by the chat template (or its fallback)
    max_tokens: int | None  # None: the model's cap (generation_config or the provider default), within the room left
    search: dict[str, Any]
    guidance: list[str] | None  # [kind, grammar, source]: source ("response_format", "tools") names errors


_HEADER = struct.Struct(">I")
MAX_FRAME = 64 << 20
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def encode_frame(message: dict[str, Any]) -> bytes:
    """One frame: length prefix and msgpack body."""
    body = _encoder.encode(message)
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """The message of one frame body."""
    message = _decoder.decode(body)
    if not isinstance(message, dict):
        raise ValueError("frame is not a map")
    return message


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a (blocking) file descriptor."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FrameReader:
    """Splits a byte stream fed in arbitrary pieces into messages (the worker's non-blocking reader)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add bytes; return the messages now complete."""
        self._buffer += data
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes is too large")
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            messages.append(decode_body(bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return messages


async def read_frame(reader: Any) -> dict[str, Any]:
    """Read one message from an ``asyncio.StreamReader`` (raises ``IncompleteReadError`` at EOF)."""
    header = await reader.readexactly(_HEADER.size)
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is too large")
    return decode_body(await reader.readexactly(size))

"""The pipe protocol between the gateway and a model's worker process.

Frames are a 4-byte big-endian length followed by a msgpack map. Every map has ``op`` (gateway -> worker)
or ``ev`` (worker -> gateway). Gateway -> worker:

- ``{"op": "gen", "id", "messages" | "prompt", "max_tokens", "search": {...}, "guidance": [kind, data]}``
- ``{"op": "cancel", "id"}``, ``{"op": "stats", "id"}``, ``{"op": "shutdown"}``

Worker -> gateway:

- ``{"ev": "ready", "pid", "context_length", "load_seconds"}`` once the model is loaded, or
  ``{"ev": "fatal", "message"}`` when it cannot be
- ``{"ev": "accepted", "id", "prompt_tokens", "max_tokens"}`` or ``{"ev": "error", "id", "status", "code",
  "message", "fallback"}`` for each ``gen``, within one generation step of its arrival
- ``{"ev": "tokens", "items": [[id, text, n_tokens, finish_reason | None], ...]}`` once per generation step
  for every sequence that moved; ``finish_reason`` is ``stop``, ``length`` or ``cancelled``
- ``{"ev": "stats", "id", ...}`` in answer to ``stats``
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgspec

__all__ = ["FrameReader", "encode_frame", "write_all"]

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

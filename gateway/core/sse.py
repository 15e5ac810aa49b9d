"""The one SSE writer: ``data:`` frames (named ones too), the ``[DONE]`` frame and the headers of a
``text/event-stream`` answer."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["DONE", "MEDIA_TYPE", "SSE_HEADERS", "frame", "frames", "named_frame"]

MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}  # no cache or proxy holds frames back
DONE = b"data: [DONE]\n\n"

_encode = msgspec.json.encode


def frame(payload: Any) -> bytes:
    """One event whose data is ``payload`` as JSON."""
    return b"data: " + _encode(payload) + b"\n\n"


def frames(payloads: list[bytes]) -> bytes:
    """One event for each of ``payloads``, JSON already (none may hold a line break outside its strings)."""
    return b"data: " + b"\n\ndata: ".join(payloads) + b"\n\n"


def named_frame(event: str, payload: Any) -> bytes:
    """One event with an ``event:`` line naming its type (the Responses and Messages APIs), data ``payload``."""
    return b"event: " + event.encode() + b"\ndata: " + _encode(payload) + b"\n\n"

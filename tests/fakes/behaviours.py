"""What the fake upstream (:mod:`tests.fakes.upstream`) can be scripted to do: one small class per behaviour,
and the record of a request it saw."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Custom",
    "Delay",
    "EndAfter",
    "MalformedSSE",
    "NoDone",
    "Recorded",
    "Reply",
    "ResetAfter",
    "StallAfter",
    "Status",
    "StreamError",
    "ToolCalls",
]


@dataclass
class Recorded:
    """One request as the fake saw it; ``disconnected`` turns True if the client left mid-response."""

    path: str
    method: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    disconnected: bool = False


@dataclass(frozen=True)
class Status:
    """Answer ``code`` with an OpenAI error (``error`` merged over the defaults) or the raw ``body``."""

    code: int
    error: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    body: bytes | None = None


@dataclass(frozen=True)
class Delay:
    """Sleep ``seconds`` before answering with ``then`` (default: the normal reply)."""

    seconds: float
    then: Any = None


@dataclass(frozen=True)
class Reply:
    """A normal answer: ``content`` (default "Hello from {name}"; "tok0 tok1 ..." if ``chunks`` is set)
    streamed a word per chunk, ``interval`` s apart. ``usage`` None follows ``stream_options.include_usage``
    (non-stream: always); ``extra`` is merged into the top level of the body and of every chunk. ``stamp``
    appends ``@<time.time_ns()>`` to each streamed word as it is sent (" tok3@1700000000123456789"), so a
    client can tell how long every chunk took to reach it (bench/bench_load.py)."""

    content: str | None = None
    chunks: int | None = None
    interval: float = 0.0
    finish_reason: str = "stop"
    usage: bool | None = None
    extra: dict[str, Any] | None = None
    stamp: bool = False


@dataclass(frozen=True)
class ResetAfter:
    """Stream ``chunks`` content chunks, then abort the TCP connection (RST). Non-stream requests and
    ``chunks=0`` abort before any header is sent."""

    chunks: int


@dataclass(frozen=True)
class StallAfter:
    """Stream ``chunks`` chunks, stall ``seconds``, then finish normally (non-stream: delay the answer)."""

    chunks: int
    seconds: float


@dataclass(frozen=True)
class MalformedSSE:
    """Stream ``chunks`` good chunks, then ``data: {not json`` and [DONE] (non-stream: bad JSON, 200)."""

    chunks: int = 1


@dataclass(frozen=True)
class NoDone:
    """Stream ``chunks`` chunks and the finish chunk, then end the response cleanly without [DONE]."""

    chunks: int = 3


@dataclass(frozen=True)
class EndAfter:
    """Stream ``chunks`` content chunks, then end the response cleanly with neither a finish chunk nor [DONE]
    (a truncated answer). Non-stream requests get the JSON answer cut off half-way, with status 200."""

    chunks: int


@dataclass(frozen=True)
class StreamError:
    """After ``chunks`` chunks send ``data: {"error": {...}}`` and end (non-stream: a 500 with it)."""

    chunks: int
    error: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Custom:
    """Answer with ``respond(request, body)``, an ``async`` function that writes whatever it likes (a hostile
    upstream: :mod:`tests.fakes.hostile` holds those)."""

    respond: Any


@dataclass(frozen=True)
class ToolCalls:
    """Answer with chat-completions tool calls, ``calls`` as ``(name, arguments JSON text)``, after ``content``
    (none by default), with ``finish_reason`` "tool_calls". Streamed, each call's arguments arrive in ``pieces``
    parts after a first delta naming the call; ids are ``call_<n>_<random>``, new for every answer."""

    calls: tuple[tuple[str, str], ...]
    content: str | None = None
    pieces: int = 3

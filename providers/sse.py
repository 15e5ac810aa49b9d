"""The upstream SSE parser: the ``data:`` payloads of a ``text/event-stream`` body as its bytes arrive.

Time is linear in the bytes received (each byte is searched once, the unfinished line kept in a bytearray),
memory is bounded by the caps of :class:`~minigate.providers.limits.UpstreamLimits`, and :data:`YIELD_EVERY` is how long
a reader may run on already-buffered bytes before it lets the event loop serve others (:func:`pause`).
"""

from __future__ import annotations

import asyncio
import time

from minigate.providers.limits import UpstreamLimits

__all__ = ["YIELD_EVERY", "DataLines", "pause"]

YIELD_EVERY = 0.0005  # seconds: a reader relaying buffered bytes pauses at least this often


async def pause() -> None:
    """Let the event loop serve others, and other threads take the GIL.

    ``asyncio.sleep(0)`` alone lets other tasks run, but a thread the gateway waits on (the usage writer's
    database thread) would still get the GIL only at the interpreter's switch interval, 5 ms per step of its
    own, while the relay keeps it busy; ``time.sleep(0)`` hands it over at once. Measured with
    bench/bench_flood.py: a chat's p99 through a flood went from 220 ms to 25 ms.
    """
    time.sleep(0)  # noqa: ASYNC251  # zero seconds: releases the GIL, never blocks the loop
    await asyncio.sleep(0)


class DataLines:
    """Splits an event stream into the payloads of its ``data:`` lines (comments, ids, event names and blank
    separators are dropped), raising :class:`~minigate.providers.base.UpstreamTooLarge` past a line or stream cap."""

    __slots__ = ("_buffer", "_limits", "_max_line", "_max_total", "_provider", "_total")

    def __init__(self, limits: UpstreamLimits, provider: str) -> None:
        self._buffer = bytearray()
        self._limits, self._provider = limits, provider
        self._max_line = limits.max_sse_line_bytes
        self._max_total = limits.max_stream_bytes
        self._total = 0

    def feed(self, raw: bytes) -> list[bytes]:
        """The payloads (stripped) of the lines ``raw`` completes, in order."""
        self._total += len(raw)
        if self._max_total is not None and self._total > self._max_total:
            raise self._limits.exceeded(self._provider, "max_stream_bytes", "the upstream's stream")
        buffer = self._buffer
        if not buffer and raw[-1:] == b"\n":  # whole lines and nothing held (the usual read): no copy into the buffer
            lines = raw.split(b"\n")
            if len(raw) > self._max_line and max(map(len, lines)) > self._max_line:
                raise self._too_long()
            return [line[5:].strip() for line in lines if line.startswith(b"data:")]
        start = len(buffer)
        buffer += raw
        end = buffer.rfind(b"\n", start)  # only the new bytes are searched: the rest held no newline
        if end < 0:
            if len(buffer) > self._max_line:
                raise self._too_long()
            return []
        lines = bytes(buffer[:end]).split(b"\n")
        del buffer[: end + 1]  # cheap: a bytearray drops its head without moving the tail
        if len(buffer) > self._max_line or max(map(len, lines)) > self._max_line:
            raise self._too_long()
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]

    def _too_long(self) -> Exception:
        return self._limits.exceeded(self._provider, "max_sse_line_bytes", "a line of the upstream's stream")

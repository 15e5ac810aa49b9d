"""Bounds on writes to a client, so one that stops reading, or leaves while a write waits, ends its request.

:func:`write_deadline` wraps the app's ``send`` (docs/architecture.md, "Slow and vanishing clients").
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import anyio
from litestar.types import ASGIApp, Message, Receive, Send
from uvicorn.protocols.http.flow_control import FlowControl

__all__ = [
    "LINK",
    "BodyWriter",
    "ClientGone",
    "Link",
    "body_writer",
    "close_at_end",
    "limit_writes",
    "reset",
    "write_deadline",
]

LINK = "minigate.link"  # the scope extension whose "link" is the request's Link
_WRITES = "minigate_writes"  # the scope state holding the request's _Writes


class Link:
    """The connection a request came on, as ``minigate serve``'s HTTP protocol shares it (a scope extension)."""

    __slots__ = ("_flow", "_transport")

    def __init__(self, transport: asyncio.Transport, flow: FlowControl) -> None:
        self._transport, self._flow = transport, flow

    @property
    def paused(self) -> bool:
        """True while the write buffer is full: a write waits until the client reads."""
        return self._flow.write_paused

    @property
    def gone(self) -> bool:
        """True once the connection is closed or closing: writes go nowhere."""
        return self._transport.is_closing()

    def abort(self) -> None:
        """Drop the connection and whatever waits in its write buffer."""
        reset(self._transport)

    @property
    def chunked(self) -> bool:
        """True while the response being sent has begun and is framed in HTTP/1.1 chunks (uvicorn's choice for a
        body of no announced length), not yet ended."""
        cycle = getattr(self._transport.get_protocol(), "cycle", None)
        return (
            getattr(cycle, "chunked_encoding", None) is True
            and getattr(cycle, "response_started", False) is True
            and getattr(cycle, "response_complete", True) is False
        )

    def write_chunk(self, body: bytes) -> None:
        """Write ``body`` as one chunk of the response body, framed as uvicorn frames it (see :attr:`chunked`)."""
        self._transport.write(b"%x\r\n%b\r\n" % (len(body), body))


def reset(transport: asyncio.Transport) -> None:
    """Abort ``transport`` with a TCP reset: a plain close would leave the unsent answer in the kernel, waiting
    (for minutes) on a client that does not read."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: uvloop's socket of a closed transport
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class ClientGone(Exception):
    """A write found the client gone, or did not end in time: the rest of the answer goes nowhere."""


@dataclass(slots=True)
class _Writes:
    deadline: float | None = None  # time.monotonic() by which a waiting write must end
    closing: list[AsyncGenerator[Any, None]] = field(default_factory=list)
    failed: bool = False


def limit_writes(scope: Any, deadline: float) -> None:
    """Writes of this request that have to wait end by ``deadline`` (``time.monotonic()``): the call's own."""
    writes = _writes_of(scope)
    if writes is not None:
        writes.deadline = deadline


def close_at_end(scope: Any, stream: AsyncGenerator[Any, None]) -> None:
    """Close ``stream`` once the request's handling has ended, however it ended (a failed write leaves the
    response's stream suspended, and nothing else would close it)."""
    writes = _writes_of(scope)
    if writes is not None:
        writes.closing.append(stream)


class BodyWriter:
    """Writes a response's body straight to its connection while no write has to wait (see :func:`body_writer`)."""

    __slots__ = ("_link", "_writes")

    def __init__(self, link: Link, writes: _Writes) -> None:
        self._link, self._writes = link, writes

    def write(self, body: bytes) -> bool:
        """Write ``body`` (not empty) now, as ``send`` would; False when it has to wait for the client to read: then
        send it through ``send``, whose wait is bounded. Raises :class:`ClientGone` once the client is gone."""
        link, writes = self._link, self._writes
        if writes.failed or link.gone:
            writes.failed = True
            raise ClientGone()
        if link.paused:
            return False
        link.write_chunk(body)
        return True


def body_writer(scope: Any) -> BodyWriter | None:
    """A writer of the response body that skips the ASGI ``send`` chain (each layer's wrapper, one after the other,
    for each piece) while a write need not wait; None where the connection is not ``minigate serve``'s or the
    response is not sent in chunks (call it once the response has started)."""
    link: Link | None = ((scope.get("extensions") or {}).get(LINK) or {}).get("link")
    writes = _writes_of(scope)
    if link is None or writes is None or not link.chunked:
        return None
    return BodyWriter(link, writes)


def _writes_of(scope: Any) -> _Writes | None:
    state = scope.get("state")
    found = state.get(_WRITES) if isinstance(state, dict) else None
    return found if isinstance(found, _Writes) else None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """True if ``kind`` is ``exc``, among its causes, or in its groups (Litestar and anyio wrap it)."""
    pending, seen = [exc], 0
    while pending and seen < 64:
        current = pending.pop()
        seen += 1
        if isinstance(current, kind):
            return True
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def write_deadline(app: ASGIApp, stall: float) -> ASGIApp:
    """Wrap ``app`` so that every write to an HTTP client is bounded in time (see the module docstring)."""

    # Typed loosely: Litestar's Scope union (HTTP | WebSocket TypedDicts) is narrower than what arrives here.
    async def handler(scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        link: Link | None = ((scope.get("extensions") or {}).get(LINK) or {}).get("link")
        writes = _Writes()
        scope.setdefault("state", {})[_WRITES] = writes

        async def bounded(message: Message) -> None:
            if writes.failed:
                raise ClientGone()
            if link is None or link.paused:
                limit = None if link is not None else stall  # minigate serve's protocol watches stalls itself
                if writes.deadline is not None:
                    left = writes.deadline - time.monotonic()
                    limit = left if limit is None else min(limit, left)
                try:
                    async with asyncio.timeout(limit):
                        await send(message)
                except TimeoutError:
                    writes.failed = True
                    raise ClientGone() from None
            else:
                await send(message)
            # uvicorn drops writes to a closed connection without a word: the answer must not go on regardless.
            if link is not None and link.gone and (message["type"] != "http.response.body" or message.get("more_body")):
                writes.failed = True
                raise ClientGone()

        try:
            await app(scope, receive, bounded)
        except Exception as exc:
            if not (writes.failed and _caused_by(exc, ClientGone)):
                raise
        finally:
            with anyio.CancelScope(shield=True):
                for stream in writes.closing:
                    await stream.aclose()
                if writes.failed and link is not None:
                    link.abort()
                    await asyncio.sleep(0)  # the server learns of the loss before it sees the app return

    return handler

"""Deadlines uvicorn lacks: for a request's headers (408, then close) and its body (``server.body_timeout``).

A client that leaves halfway through its body is logged as 499 (docs/architecture.md, "Slow and vanishing
clients").
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar.types import ASGIApp, Receive, ReceiveMessage, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from minigate.gateway.core.errors import GatewayError, error_body
from minigate.gateway.core.writes import LINK, Link, reset

__all__ = ["BodyTimeout", "ClientLeft", "body_deadline", "header_deadline"]


class BodyTimeout(GatewayError):
    """408: the body did not arrive within the body-read deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The request body did not arrive within {seconds:g} seconds; send it again, faster.",
            status=408,
            code="request_timeout",
            headers={"connection": "close"},
        )


class ClientLeft(GatewayError):
    """499: the client disconnected before its body was complete; the answer goes nowhere."""

    def __init__(self) -> None:
        super().__init__("The client disconnected before its request body was complete.", status=499)


def body_deadline(app: ASGIApp, seconds: float) -> ASGIApp:
    """Wrap ``app`` so that every HTTP request's body must be read within ``seconds`` of its start."""

    # Typed loosely: Litestar's Scope union (HTTP | WebSocket TypedDicts) is narrower than what arrives here.
    async def handler(scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        complete = False

        async def receive_in_time() -> ReceiveMessage:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                complete = True  # a second read would only time out again
                raise BodyTimeout(seconds) from None
            if message["type"] == "http.disconnect":
                complete = True
                raise ClientLeft()
            complete = not message.get("more_body", False)
            return message

        await app(scope, receive_in_time, send)

    return handler


def header_deadline(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, with ``seconds`` for a request's headers to arrive (``http=`` of its Config),
    and as long for a paused write to make progress (else the connection is aborted).

    What its parser refuses (a malformed request line, NUL in a header) is answered in OpenAI's error shape too.
    """
    body = msgspec.json.encode(
        error_body(f"The request headers did not arrive within {seconds:g} seconds.", "invalid_request_error")
    )
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    malformed = msgspec.json.encode(
        error_body(
            "The request is not valid HTTP/1.1: its request line or headers are malformed (control characters "
            "such as NUL are not allowed in headers).",
            "invalid_request_error",
            None,
            "invalid_http_request",
        )
    )

    class HeaderDeadline(HttpToolsProtocol):
        timer: asyncio.TimerHandle | None = None
        stall: asyncio.TimerHandle | None = None  # armed while writing is paused
        link: Link | None = None

        def send_400_response(self, msg: str) -> None:
            # uvicorn's own answer to what its parser refuses is plain text; ours keeps OpenAI's error shape.
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head.append(b"content-type: application/json\r\nconnection: close\r\n")
            head.append(b"content-length: " + str(len(malformed)).encode() + b"\r\n\r\n")
            self.transport.write(b"".join(head) + malformed)
            self.transport.close()

        def _arm(self) -> None:
            if self.timer is None:
                self.timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def _expired(self) -> None:
            self.timer = None
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

        def _watch_writes(self, buffered: int) -> None:
            self.stall = self.loop.call_later(seconds, self._check_writes, buffered)

        def _check_writes(self, before: int) -> None:
            self.stall = None
            if not self.flow.write_paused:
                return
            buffered = self.transport.get_write_buffer_size()
            if buffered < before:  # the client reads, if slowly: watch on
                self._watch_writes(buffered)
            else:
                reset(self.transport)  # connection_lost tells the request it is gone

        def _unwatch_writes(self) -> None:
            if self.stall is not None:
                self.stall.cancel()
                self.stall = None

        def pause_writing(self) -> None:
            super().pause_writing()
            if self.stall is None:
                self._watch_writes(self.transport.get_write_buffer_size())

        def resume_writing(self) -> None:
            self._unwatch_writes()
            super().resume_writing()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.link = Link(transport, self.flow)
            self._arm()  # a connection that sends nothing at all is held no longer than one sending slowly

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["extensions"] = {LINK: {"link": self.link}}
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._unwatch_writes()
            super().connection_lost(exc)

    return HeaderDeadline

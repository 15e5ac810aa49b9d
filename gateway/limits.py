"""A deadline for reading a request's body, which uvicorn does not have.

A client that sends its headers and then trickles the body (or stops sending it: a slow-loris upload) would
otherwise hold a connection and a handler for as long as it likes. :func:`body_deadline` wraps the app's
``receive`` so the whole body must arrive within ``server.body_timeout`` seconds of the request starting;
past that the handler's read fails with a 408 in OpenAI's error shape and the connection is closed. Once the
body is complete, ``receive`` is the server's own again (handlers wait on it for the client's disconnect).

A client that disconnects halfway through its body gets status 499 in the log and metrics (nobody is there to
read an answer) instead of the framework's "500 client disconnected prematurely".
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.types import ASGIApp, Receive, ReceiveMessage, Send

from gateway.errors import GatewayError

__all__ = ["BodyTimeout", "ClientLeft", "body_deadline"]


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

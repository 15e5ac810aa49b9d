"""Anthropic's Messages API, ``/v1/messages`` and ``/v1/messages/count_tokens``: translated onto chat completions
(see minigate.gateway.protocols.anthropic), or passed through to a deployment that speaks it (``anthropic``
providers, with the client's ``anthropic-beta`` header), and answered as a ``message`` or its event stream; and the
``HEAD /`` probe that agents on that API send to the base URL first. Errors under ``/v1/messages`` are in
Anthropic's shape (minigate.gateway.core.errors)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, Send

from minigate.gateway.core.errors import AuthenticationFailed, ModelNotFound
from minigate.gateway.core.headers import header_value
from minigate.gateway.core.sse import named_frame
from minigate.gateway.core.wire import decode_request
from minigate.gateway.http.api import answer_headers, serve, stream_response
from minigate.gateway.ops.observe import trace_of
from minigate.gateway.protocols.anthropic import (
    CountTokensRequest,
    MessagesRequest,
    Translated,
    chat_request,
    estimate_tokens,
    prompt_body,
    translate,
)
from minigate.gateway.protocols.anthropic_out import MessageStream, error_frame, message_from_chat
from minigate.gateway.protocols.native import message_model
from minigate.gateway.routing.routes import check_model_name
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.serving.events import Chunk, Event, EventStream, Native, Outcome, Reply, Usage
from minigate.gateway.serving.proxy import Passthrough, start_call

__all__ = ["DROPPED_HEADER", "messages_handlers", "root_probe"]

DROPPED_HEADER = "x-minigate-dropped"  # request fields that would change the answer but were not honoured

_encode = msgspec.json.encode
_PASSED_ON = ("anthropic-beta",)  # the client's headers a native deployment is sent


async def _authenticate(request: Request[Any, Any, Any], gateway: Gateway) -> int | None:
    """The key id for ``x-api-key: KEY`` (Anthropic's SDKs) or ``Authorization: Bearer KEY``; else 401."""
    api_key = request.headers.get("x-api-key")
    try:
        return await gateway.authenticate(f"Bearer {api_key}" if api_key else request.headers.get("authorization"))
    except AuthenticationFailed:
        raise AuthenticationFailed(
            "Invalid or missing API key. Send 'x-api-key: <key>' or 'Authorization: Bearer <key>'."
        ) from None


async def _frames(events: AsyncGenerator[Event, None], stream: MessageStream) -> AsyncGenerator[bytes, None]:
    """Anthropic's event stream from the serving layer's events."""
    try:
        yield stream.start()
        async for event in events:
            if type(event) is Chunk:
                if out := stream.chunk(event):
                    yield out
            elif type(event) is Usage:
                stream.usage = event.counts
            elif type(event) is Outcome:
                yield stream.end(event)
    finally:
        await events.aclose()  # ends the upstream call and stores the row, if the events were not read to the end


async def _native_frames(events: AsyncGenerator[Event, None], model: str) -> AsyncGenerator[bytes, None]:
    """A native deployment's events as they came (``model`` the client's name), or the error that ended them."""
    try:
        async for event in events:
            if type(event) is Native:
                yield named_frame(event.event, message_model(event, model))
            elif type(event) is Outcome and event.failure is not None:
                yield error_frame(event.failure)
    finally:
        await events.aclose()


@post("/messages", status_code=200)
async def create_message(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[Any]:
    """Anthropic ``POST /v1/messages``, JSON or ``stream: true`` (``?beta=true`` and the ``anthropic-*`` headers
    are accepted; ``anthropic-beta`` and ``thinking`` reach only a deployment that speaks the Messages API)."""
    key_id = await _authenticate(request, gateway)
    parsed, raw = decode_request(await request.body(), MessagesRequest)
    translated = translate(parsed)  # also checks that any deployment of the chain could be sent the request
    body = translated.body
    passed = {name: header_value(value) for name in _PASSED_ON if (value := request.headers.get(name))}
    trace = trace_of(request.scope)
    native = Passthrough("messages", raw, passed)
    call = start_call(
        gateway, "chat/completions", chat_request(body), body, key_id, trace, label="messages", native=native
    )
    return await serve(request, call, lambda served: _answer(request, served, translated, body))


def _answer(
    request: Request[Any, Any, Any], served: EventStream | Reply, translated: Translated, body: dict[str, Any]
) -> Response[Any]:
    """The Messages answer to ``served``: a ``message``, or its event stream."""
    headers = answer_headers(served.outcome)
    if translated.dropped and not served.outcome.native:
        headers[DROPPED_HEADER] = ", ".join(translated.dropped)
    if isinstance(served, Reply):
        if served.outcome.native:
            message = {**served.body, "model": translated.model}
        else:
            message = message_from_chat(served.body, translated.model, translated.stop_sequences)
        return Response(_encode(message), media_type="application/json", headers=headers)
    if served.outcome.native:
        frames = _native_frames(served.events, translated.model)
    else:
        stream = MessageStream(translated.model, translated.stop_sequences, estimate_tokens(body))
        frames = _frames(served.events, stream)
    return stream_response(request, frames, served.events, headers)


@post("/messages/count_tokens", status_code=200)
async def count_tokens(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Anthropic ``POST /v1/messages/count_tokens``: an estimate of the prompt's tokens (see
    ``minigate.gateway.protocols.anthropic.estimate_tokens``); the model must be one the gateway routes."""
    await _authenticate(request, gateway)
    parsed, _ = decode_request(await request.body(), CountTokensRequest)
    if gateway.routes.resolve(check_model_name(parsed.model)) is None:
        raise ModelNotFound(parsed.model)
    tokens = estimate_tokens(prompt_body(parsed))
    return Response(_encode({"input_tokens": tokens}), media_type="application/json")


_PROBE_ANSWER: HTTPResponseStartEvent = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", b"0")],
}


def root_probe(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` so that ``HEAD /`` answers 200 with no body: agents probe the base URL before their first
    request. Not a route: Litestar refuses a second handler for ``/`` outside the web UI's router, which has
    ``GET /``; nothing is looked up here, so the probe is cheap and cannot fail."""

    async def handler(scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] == "HEAD":
            await send(_PROBE_ANSWER)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await app(scope, receive, send)

    return handler


def messages_handlers() -> list[Any]:
    """Every /v1/messages route handler, for the app factory's /v1 router (``root_probe`` wraps the app)."""
    return [create_message, count_tokens]

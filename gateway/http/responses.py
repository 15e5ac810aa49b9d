"""OpenAI's Responses API, ``/v1/responses``: translated onto chat completions (see
minigate.gateway.protocols.responses), or passed through to a deployment that speaks it (see
minigate.gateway.protocols.native), answered as a Response object or its event stream, and stored (``store``) for
``previous_response_id`` and the ``GET``/``DELETE`` routes."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from minigate.gateway.core.errors import InvalidRequest
from minigate.gateway.core.sse import named_frame
from minigate.gateway.core.wire import decode_request
from minigate.gateway.http.api import answer_headers, serve, stream_response
from minigate.gateway.ops.observe import trace_of
from minigate.gateway.protocols.native import NativeResponseEvents, native_response, responses_passthrough
from minigate.gateway.protocols.responses import (
    ResponsesRequest,
    chat_body,
    chat_request,
    input_items,
    new_id,
    not_found,
)
from minigate.gateway.protocols.responses_out import ResponseEvents, from_chat, response_base
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.serving.events import Chunk, Event, EventStream, Native, Outcome, Reply, Usage
from minigate.gateway.serving.proxy import Passthrough, start_call
from minigate.gateway.storage.responses import ResponseStore

__all__ = ["responses_handlers"]

_encode = msgspec.json.encode

Kept = tuple[ResponseStore, int | None, list[dict[str, Any]]]  # where a stored response goes, and its input


def _json(body: Any, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(_encode(body), media_type="application/json", headers=headers)


def _store(gateway: Gateway) -> ResponseStore:
    store = gateway.responses
    assert store is not None  # Gateway.open made it
    return store


def _named(out: list[dict[str, Any]]) -> bytes:
    return b"".join(named_frame(event["type"], event) for event in out)


async def _frames(
    events: AsyncGenerator[Event, None], stream: ResponseEvents, keep: Kept | None
) -> AsyncGenerator[bytes, None]:
    """The Responses event stream from the serving layer's events; the response is kept before it completes."""
    frames = _named
    try:
        yield frames(stream.start())
        async for event in events:
            if type(event) is Chunk:
                if out := stream.chunk(event):
                    yield frames(out)
            elif type(event) is Usage:
                stream.usage(event.counts)
            elif type(event) is Outcome:
                out = stream.finish(event.failure)
                if event.failure is None and keep is not None:
                    keep[0].keep(keep[1], keep[2], stream.response)
                yield frames(out)
    finally:
        await events.aclose()  # ends the upstream call and stores the row, if the events were not read to the end


async def _native_frames(
    events: AsyncGenerator[Event, None], stream: NativeResponseEvents, keep: Kept | None
) -> AsyncGenerator[bytes, None]:
    """A native deployment's Responses events, passed on with the gateway's own fields; kept as :func:`_frames`."""
    try:
        async for event in events:
            if type(event) is Native:
                data = stream.event(event)
                if stream.completed and keep is not None:
                    keep[0].keep(keep[1], keep[2], stream.response)
                    keep = None
                yield named_frame(event.event, data)
            elif type(event) is Outcome and event.failure is not None:
                yield _named([stream.failed(event.failure)])
    finally:
        await events.aclose()


@post("/responses", status_code=200)
async def create_response(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[Any]:
    """OpenAI ``POST /v1/responses``, JSON or ``stream: true``."""
    key_id = await gateway.authenticate(request.headers.get("authorization"))
    parsed, raw = decode_request(await request.body(), ResponsesRequest)
    store = _store(gateway)
    items = input_items(parsed.input)
    history = None
    if parsed.previous_response_id is not None:
        previous = await store.get(key_id, parsed.previous_response_id, gateway.keys.user_of(key_id))
        if previous is None:
            raise not_found(parsed.previous_response_id, "previous_response_id")
        history = previous.conversation
        items = history + items
    body = chat_body(parsed, items)  # also checks that any deployment of the chain could be sent the request
    native = Passthrough("responses", responses_passthrough(raw, history))
    trace = trace_of(request.scope)
    call = start_call(
        gateway, "chat/completions", chat_request(body), body, key_id, trace, label="responses", native=native
    )
    keep = (store, key_id, items) if parsed.store is not False else None
    return await serve(request, call, lambda served: _answer(request, served, parsed, keep))


def _answer(
    request: Request[Any, Any, Any], served: EventStream | Reply, parsed: ResponsesRequest, keep: Kept | None
) -> Response[Any]:
    """The Responses answer to ``served``: a Response object (kept unless ``store`` is false), or its events."""
    base = response_base(parsed, new_id("resp"), served.outcome.deployment.ref)
    if isinstance(served, Reply):
        response = native_response(served.body, base) if served.outcome.native else from_chat(base, served.body)
        if keep is not None:
            keep[0].keep(keep[1], keep[2], response)
        return _json(response, answer_headers(served.outcome))
    if served.outcome.native:
        frames = _native_frames(served.events, NativeResponseEvents(base), keep)
    else:
        frames = _frames(served.events, ResponseEvents(base), keep)
    return stream_response(request, frames, served.events, answer_headers(served.outcome))


@get("/responses/{response_id:str}")
async def get_response(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], response_id: FromPath[str]
) -> Response[bytes]:
    """OpenAI ``GET /v1/responses/{id}``: a stored response of the caller's key."""
    key_id = await gateway.authenticate(request.headers.get("authorization"))
    stored = await _store(gateway).get(key_id, response_id, gateway.keys.user_of(key_id))
    if stored is None:
        raise not_found(response_id)
    return _json(stored.response)


@delete("/responses/{response_id:str}", status_code=200)
async def delete_response(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], response_id: FromPath[str]
) -> Response[bytes]:
    """OpenAI ``DELETE /v1/responses/{id}``."""
    key_id = await gateway.authenticate(request.headers.get("authorization"))
    if not await _store(gateway).delete(key_id, response_id, gateway.keys.user_of(key_id)):
        raise not_found(response_id)
    return _json({"id": response_id, "object": "response", "deleted": True})


@get("/responses/{response_id:str}/input_items")
async def list_input_items(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    response_id: FromPath[str],
    order: FromQuery[Literal["asc", "desc"]] = "desc",
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    after: FromQuery[str | None] = None,
) -> Response[bytes]:
    """OpenAI ``GET /v1/responses/{id}/input_items``: the response's input items, newest first by default."""
    key_id = await gateway.authenticate(request.headers.get("authorization"))
    stored = await _store(gateway).get(key_id, response_id, gateway.keys.user_of(key_id))
    if stored is None:
        raise not_found(response_id)
    items = stored.input if order == "asc" else stored.input[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"No input item with id {after!r} in this response.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    first, last = (page[0].get("id"), page[-1].get("id")) if page else (None, None)
    return _json({"object": "list", "data": page, "first_id": first, "last_id": last, "has_more": len(items) > limit})


def responses_handlers() -> list[Any]:
    """Every /v1/responses route handler, for the app factory."""
    return [create_response, get_response, delete_response, list_input_items]

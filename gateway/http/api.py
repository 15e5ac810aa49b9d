"""The OpenAI-compatible ``/v1`` handlers: each checks the API key, hands over to ``minigate.gateway.serving.proxy``,
and encodes the typed answer it gets back as JSON or as chat-completions SSE (the only place /v1's bytes are
written)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream

from minigate.gateway.core.errors import ModelNotFound
from minigate.gateway.core.headers import header_values
from minigate.gateway.core.sse import DONE, MEDIA_TYPE, SSE_HEADERS, frame, frames
from minigate.gateway.core.wire import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelCard,
    ModelList,
    decode_request,
)
from minigate.gateway.core.writes import BodyWriter, body_writer, close_at_end, limit_writes
from minigate.gateway.ops.limits import usable
from minigate.gateway.ops.observe import trace_of
from minigate.gateway.routing.chain import cause_of
from minigate.gateway.routing.routes import check_model_name
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.serving.events import Chunk, Event, EventStream, Outcome, Passed, Reply
from minigate.gateway.serving.proxy import Call, serve_json, start_call
from minigate.gateway.serving.streaming import serve_stream
from minigate.providers.base import Endpoint

__all__ = ["ClientGone", "answer_headers", "cancel_on_disconnect", "serve", "stream_response", "v1_handlers"]

T = TypeVar("T")

_encode = msgspec.json.encode

_WATCH_AFTER = 0.02  # seconds


class ClientGone(Exception):
    """The client hung up before the answer was ready (answered with a 499 nobody reads)."""


async def cancel_on_disconnect(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Await ``work``; if the client hangs up meanwhile, cancel it (and the upstream call with it).

    The watcher starts only once a request has run for ``_WATCH_AFTER`` seconds: most answers are done by
    then, and a task per request was a measurable share of the gateway's latency at concurrency 1.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    def arm() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(_WATCH_AFTER, arm)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


def answer_headers(outcome: Outcome) -> dict[str, str]:
    """Headers telling the client who answered, and why the deployments before it did not."""
    deployment = outcome.deployment
    headers = {
        "x-minigate-provider": deployment.provider,
        "x-minigate-model": deployment.model,
        "x-minigate-fallbacks": str(outcome.fallbacks),
    }
    if outcome.hops:  # e.g. "local/smollm2: unsupported_content" when a capability refusal went remote
        headers["x-minigate-fallback-reasons"] = ", ".join(
            f"{h.deployment.ref}: {cause_of(h.error)[1]}" for h in outcome.hops
        )
    headers.update((f"x-minigate-{name}", value) for name, value in outcome.notes.items())
    return header_values(headers)


async def _frames(events: AsyncGenerator[Event, None], scope: Any) -> AsyncGenerator[bytes, None]:
    """Chat-completions SSE: each chunk as sent, then ``[DONE]``, or the error event that ended the answer.

    Each piece is written straight to the connection while nothing has to wait (``body_writer``); only what waits
    for the client is yielded to the response, whose ``send`` bounds the wait.
    """
    try:
        writer: BodyWriter | None = None
        started = False
        async for event in events:
            kind = type(event)
            if kind is Passed:
                body = frames(event.payloads)  # type: ignore[union-attr]
            elif kind is Chunk:
                body = frame(event.data)  # type: ignore[union-attr]
            elif kind is Outcome:
                failure = event.failure  # type: ignore[union-attr]
                body = DONE if failure is None else frame(failure.body())
            else:
                continue
            if not started:  # the response has started by now: its framing is known
                writer, started = body_writer(scope), True
            if writer is None or not writer.write(body):
                yield body
    finally:
        await events.aclose()  # ends the upstream call and stores the row, if the events were not read to the end


async def serve(
    request: Request[Any, Any, Any],
    call: Call,
    respond: Callable[[EventStream | Reply], Response[Any]],
    passthrough: bool = False,
) -> Response[Any]:
    """Serve ``call`` (a stream or one JSON answer) and ``respond`` with what it gives; the answer's writes too end
    by the call's deadline, and a client that hangs up first cancels it (a 499 nobody reads). ``passthrough``:
    ``respond`` takes :class:`~minigate.gateway.serving.events.Passed` events (it writes chat-completions SSE)."""
    limit_writes(request.scope, call.deadline)
    try:
        served: EventStream | Reply = await cancel_on_disconnect(
            request, serve_stream(call, passthrough) if call.stream else serve_json(call)
        )
    except ClientGone:
        return Response(b"", status_code=499)
    return respond(served)


def stream_response(
    request: Request[Any, Any, Any],
    frames: AsyncGenerator[bytes, None],
    events: AsyncGenerator[Event, None],
    headers: dict[str, str],
) -> Stream:
    """The streamed answer of ``frames``, written from ``events``."""
    # However the response ends: closing the events stores the row (``frames`` may never have been started).
    close_at_end(request.scope, frames)
    close_at_end(request.scope, events)
    return Stream(frames, media_type=MEDIA_TYPE, headers={**headers, **SSE_HEADERS})


def _respond(request: Request[Any, Any, Any], served: EventStream | Reply) -> Response[Any]:
    if isinstance(served, Reply):
        return Response(_encode(served.body), media_type="application/json", headers=answer_headers(served.outcome))
    encoded = _frames(served.events, request.scope)
    return stream_response(request, encoded, served.events, answer_headers(served.outcome))


async def _serve(
    request: Request[Any, Any, Any], gateway: Gateway, endpoint: Endpoint, struct: type[Any]
) -> Response[Any]:
    key_id = await gateway.authenticate(request.headers.get("authorization"))
    parsed, raw = decode_request(await request.body(), struct)
    call = start_call(gateway, endpoint, parsed, raw, key_id, trace_of(request.scope))
    return await serve(request, call, lambda served: _respond(request, served), passthrough=endpoint != "embeddings")


@post("/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[Any]:
    """OpenAI ``POST /v1/chat/completions``, JSON or ``stream: true``."""
    return await _serve(request, gateway, "chat/completions", ChatCompletionRequest)


@post("/completions", status_code=200)
async def completions(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[Any]:
    """OpenAI ``POST /v1/completions`` (legacy text completions)."""
    return await _serve(request, gateway, "completions", CompletionRequest)


@post("/embeddings", status_code=200)
async def embeddings(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[Any]:
    """OpenAI ``POST /v1/embeddings``, passed to providers that serve it."""
    return await _serve(request, gateway, "embeddings", EmbeddingRequest)


def _cards(gateway: Gateway, key_id: int | None = None) -> list[ModelCard]:
    cards = []
    keys = gateway.keys
    person = keys.user_of(key_id)
    own = None if person is None else keys.person_policy(person)
    policies = [p for p in (keys.policies.get(key_id or 0), own) if p is not None]
    for ident, kind, details in gateway.routes.listing():
        if policies and not all(usable(p, gateway.routes.resolve(ident)) for p in policies):  # what it may not call
            continue
        provider = gateway.providers.get(str(details.get("provider"))) if kind == "model" else None
        runs_on = getattr(provider, "runs_on", None)  # a local model: the back end and device it is loaded on
        extra = runs_on(ident.partition("/")[2]) if callable(runs_on) else {}
        card = {"kind": kind, **details, **extra}
        cards.append(ModelCard(id=ident, owned_by=str(details.get("provider", "minigate")), minigate=card))
    return cards


@get("/models")
async def list_models(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """OpenAI ``GET /v1/models``: agents, aliases and provider models (those the key's policy allows)."""
    key_id = await gateway.authenticate(request.headers.get("authorization"))
    # The router decodes before matching, so ``/v1/models/%2F`` (the id "/") arrives here: it names no model.
    raw_path = bytes(request.scope.get("raw_path") or b"")
    if raw_path.rstrip(b"/") not in (b"", b"/v1/models"):
        raise ModelNotFound(check_model_name(unquote(raw_path.decode("latin-1").removeprefix("/v1/models/"))))
    return Response(msgspec.json.encode(ModelList(data=_cards(gateway, key_id))), media_type="application/json")


@get("/models/{model_id:path}")
async def get_model(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], model_id: FromPath[str]
) -> Response[bytes]:
    """OpenAI ``GET /v1/models/{id}`` (ids may contain slashes: ``provider/model``)."""
    key_id = await gateway.authenticate(request.headers.get("authorization"))
    wanted = check_model_name(model_id.lstrip("/"))
    for card in _cards(gateway, key_id):
        if card.id == wanted:
            return Response(msgspec.json.encode(card), media_type="application/json")
    raise ModelNotFound(wanted)


def v1_handlers() -> list[Any]:
    """Every /v1 route handler, for the app factory."""
    return [chat_completions, completions, embeddings, list_models, get_model]

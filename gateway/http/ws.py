"""``GET /v1/ws``: chat completions over a WebSocket, several in flight per socket, each one cancellable.

JSON text frames with a ``type`` and the client's ``id`` for a request (the README's WebSocket section lists
them). Each chat goes through the router like POST /v1/chat/completions; the key is checked again per chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import msgspec
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from minigate.gateway.core.errors import AuthenticationFailed, GatewayError, InvalidRequest
from minigate.gateway.core.wire import ChatCompletionRequest, decode_request
from minigate.gateway.ops.refusals import REFUSED_STATUSES
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.serving.events import Chunk, Event, Outcome, Usage
from minigate.gateway.serving.proxy import start_call
from minigate.gateway.serving.streaming import serve_stream

__all__ = ["ws_chat"]

log = logging.getLogger("minigate")

MAX_IN_FLIGHT = 16  # requests per socket
AUTH_WAIT = 10.0  # seconds for the auth frame
IDLE_CLOSE = 600.0  # seconds without a frame and with nothing in flight
MAX_FRAMES = 1_000_000  # per socket, so even the receive loop has a bound in count


class _Frame(msgspec.Struct):
    type: str
    id: str | None = None
    request: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # kept raw: checked like a POST body
    api_key: str | None = None


_decode_frame = msgspec.json.Decoder(_Frame).decode


class _Socket:
    """One connection: its key, its requests in flight, and one writer at a time."""

    def __init__(self, socket: WebSocket[Any, Any, Any], gateway: Gateway) -> None:
        self.socket, self.gateway = socket, gateway
        self.key_id: int | None = None
        self.authorization: str | None = None  # re-checked for every chat: a key may be revoked while open
        self.tasks: dict[str, asyncio.Task[None]] = {}  # chat requests in flight, by the client's id
        self.helpers: set[asyncio.Task[None]] = set()  # frames being sent outside a request (errors, pong)
        self.cancelled: set[str] = set()
        self.lock = asyncio.Lock()
        self.open = True

    async def send(self, payload: dict[str, Any]) -> None:
        if not self.open:
            return
        async with self.lock:
            try:
                await self.socket.send_data(msgspec.json.encode(payload).decode(), mode="text")
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.open = False  # the receive loop sees the disconnect and cancels what is in flight

    async def error(self, ident: str | None, err: GatewayError) -> None:
        await self.send({"type": "error", "id": ident, "status": err.status, **err.body()})

    def note_refused(self, err: GatewayError, model: str | None = None) -> None:
        """Count a 401, 403 or 429 answered before any upstream, as the HTTP edge does (coalesced usage rows)."""
        if err.status in REFUSED_STATUSES:
            client = self.socket.client
            address = client.host if client is not None else None
            self.gateway.refusals.note(err.status, err.code, self.key_id, address, "ws", model)

    async def authenticate(self) -> bool:
        header = self.socket.headers.get("authorization")
        try:
            if header is None:
                async with asyncio.timeout(AUTH_WAIT):
                    frame = _decode_frame(await self.socket.receive_data(mode="text"))
                if frame.type != "auth" or not frame.api_key:
                    raise InvalidRequest("Send an Authorization header, or first an auth frame with api_key.")
                header = f"Bearer {frame.api_key}"
            self.key_id = await self.gateway.authenticate(header)
            self.authorization = header
            return True
        except GatewayError as err:
            self.note_refused(err)
            await self.error(None, err)
        except (TimeoutError, msgspec.DecodeError):
            await self.error(None, InvalidRequest("Send an auth frame first: {'type': 'auth', 'api_key': ...}."))
        await self.refuse()
        return False

    async def refuse(self) -> None:
        """Close with 1008 (policy violation): the key is bad; the receive loop then ends and cancels the rest."""
        async with self.lock:
            if self.open:
                self.open = False
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await self.socket.close(code=1008, reason="invalid API key")

    def receive(self, text: str | bytes) -> None:
        try:
            frame = _decode_frame(text)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            self._spawn_error(None, InvalidRequest(f"Not a frame of this protocol: {err}."))
            return
        ident = frame.id
        if frame.type == "ping":
            self._spawn(self.send({"type": "pong"}))
        elif frame.type == "cancel":
            task = self.tasks.get(ident or "")
            if task is not None and ident is not None:
                self.cancelled.add(ident)
                task.cancel()
        elif frame.type != "chat":
            self._spawn_error(ident, InvalidRequest(f"Unknown frame type {frame.type!r}.", param="type"))
        elif not ident or len(ident) > 64:
            self._spawn_error(None, InvalidRequest("A chat frame needs an id of 1-64 characters.", param="id"))
        elif ident in self.tasks:
            self._spawn_error(ident, InvalidRequest(f"A request with id {ident!r} is in flight.", param="id"))
        elif len(self.tasks) >= MAX_IN_FLIGHT:
            message = f"At most {MAX_IN_FLIGHT} requests may be in flight on one socket."
            refused = GatewayError(message, status=429, type="rate_limit_error", code="too_many_requests")
            self.note_refused(refused)
            self._spawn_error(ident, refused)
        elif self.gateway.drain.stopping:
            message = "The gateway is shutting down; send the request again."
            self._spawn_error(
                ident, GatewayError(message, status=503, type="server_error", code="server_shutting_down")
            )
        else:
            task = self.tasks[ident] = asyncio.ensure_future(self._chat(ident, frame.request))
            task.add_done_callback(functools.partial(self._finished, ident))

    def _finished(self, ident: str, task: asyncio.Task[None]) -> None:
        # Here rather than in the task: a task cancelled before it ran never enters its own code.
        self.tasks.pop(ident, None)
        if ident in self.cancelled:
            self.cancelled.discard(ident)
            if task.cancelled():
                self._spawn(self.send({"type": "cancelled", "id": ident}))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.helpers.add(task)
        task.add_done_callback(self.helpers.discard)

    def _spawn_error(self, ident: str | None, err: GatewayError) -> None:
        self._spawn(self.error(ident, err))

    async def _chat(self, ident: str, request: msgspec.Raw) -> None:
        events: AsyncGenerator[Event, None] | None = None
        started = time.perf_counter()
        # What /metrics counts for this request (endpoint "ws"), as for an HTTP request: 499 if it is cut.
        status, provider = 499, None
        try:
            if not len(request):
                raise InvalidRequest("A chat frame needs a request: a body as for /v1/chat/completions.", "request")
            try:
                self.key_id = await self.gateway.authenticate(self.authorization)  # revoked since the last one?
            except AuthenticationFailed as err:
                status = err.status
                self.note_refused(err)
                await self.error(ident, err)
                await self.refuse()
                return
            parsed, raw = decode_request(bytes(request), ChatCompletionRequest)
            raw.update(stream=True, stream_options={"include_usage": True})  # deltas, and usage for "done"
            parsed.stream = True
            try:
                call = start_call(self.gateway, "chat/completions", parsed, raw, self.key_id)
            except GatewayError as err:  # the key's or its person's policy, before any upstream
                self.note_refused(err, parsed.model if isinstance(parsed.model, str) else None)
                raise
            served = await serve_stream(call)
            events = served.events
            provider = served.outcome.deployment.provider
            done: dict[str, Any] = {"type": "done", "id": ident, "request_id": call.request_id}
            done.update(model=served.outcome.deployment.ref, fallbacks=served.outcome.fallbacks)
            if await self._relay(ident, events, done):
                status = 200
                await self.send(done)
            else:
                status = 502
        except GatewayError as err:
            status = err.status
            await self.error(ident, err)
        except Exception:
            status = 500
            log.exception("websocket request %s failed", ident)
            message = "The gateway hit an internal error; it has been logged."
            await self.error(ident, GatewayError(message, status=500, type="server_error"))
        finally:
            self.gateway.metrics.request("ws", status, provider, time.perf_counter() - started)
            if events is not None:
                with anyio.CancelScope(shield=True):
                    await events.aclose()  # ends the upstream call; the relay stores the usage row (499 if cut)

    async def _relay(self, ident: str, events: AsyncGenerator[Event, None], done: dict[str, Any]) -> bool:
        """Forward deltas; fill ``done``. False when the answer broke off with an error (already sent)."""
        parts: list[str] = []
        finish: str | None = None
        async for event in events:
            if isinstance(event, Usage):
                done["usage"] = event.counts
            elif isinstance(event, Outcome):
                if event.failure is not None:
                    await self.send({"type": "error", "id": ident, "status": 502, **event.failure.body()})
                    return False
            elif isinstance(event, Chunk):
                for choice in event.choices():
                    delta = choice.get("delta") or {}
                    finish = choice.get("finish_reason") or finish
                    if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                        parts.append(delta.get("content") or "")
                        frame = {"type": "delta", "id": ident, "delta": delta, "index": choice.get("index", 0)}
                        await self.send(frame)
        done.update(message={"role": "assistant", "content": "".join(parts)}, finish_reason=finish)
        return True

    async def close(self) -> None:
        """Cancel everything in flight (the socket is gone) and wait for the usage rows to be stored."""
        self.open = False
        tasks = [*self.tasks.values(), *self.helpers]
        for task in tasks:
            task.cancel()
        if tasks:
            with anyio.CancelScope(shield=True):
                await asyncio.wait(tasks, timeout=10)


@websocket("/ws")
async def ws_chat(socket: WebSocket[Any, Any, Any], gateway: NamedDependency[Gateway]) -> None:
    """Chat completions over a WebSocket; see the module docstring for the protocol."""
    await socket.accept()
    session = _Socket(socket, gateway)
    if not await session.authenticate():
        return
    try:
        for _ in range(MAX_FRAMES):
            idle = None if session.tasks else IDLE_CLOSE
            try:
                async with asyncio.timeout(idle):
                    text = await socket.receive_data(mode="text")
            except TimeoutError:
                await socket.close(code=1000, reason="idle")
                break
            if not session.open:
                break  # refused (its key was revoked) or gone: nothing more is taken from this socket
            session.receive(text)
        else:
            await session.error(None, GatewayError("Too many frames on one socket; reconnect.", code="too_many_frames"))
            await socket.close(code=1008)
    except WebSocketDisconnect:
        pass
    finally:
        await session.close()

"""The request wrapper around the whole app: request id, one log line per request, /v1 counters, drain refusal.

It wraps Litestar's ASGI handler outside its exception handling, so every response (404s and 500s included) gets
an ``x-request-id``: the client's own when well formed, else a new one.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.types import ASGIApp, Message, Receive, Send

from minigate.gateway.core.errors import ERROR_CODE, error_body
from minigate.gateway.ops.drain import Drain
from minigate.gateway.ops.logs import AccessLine
from minigate.gateway.ops.monitor import GatewayMetrics
from minigate.gateway.ops.refusals import REFUSED_STATUSES, Refusals

__all__ = ["Trace", "new_request_id", "observe", "trace_of"]

access = logging.getLogger("minigate.access")

_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
_ENDPOINTS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/models": "models",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "messages/count_tokens",
}
_PROBES = frozenset({"/health", "/ready", "/metrics"})
_TRACE = "minigate_trace"
_REFUSED = msgspec.json.encode(
    error_body("The gateway is shutting down; send the request again.", "server_error", None, "server_shutting_down")
)


def new_request_id() -> str:
    """A fresh request id (32 hex digits)."""
    return os.urandom(16).hex()


@dataclass(slots=True)
class Trace:
    """What is known of one request by the time its log line is written."""

    request_id: str
    status: int | None = None  # as stored in the usage row; the HTTP status when None
    provider: str | None = None
    model: str | None = None
    fallbacks: int = 0
    error: str | None = None
    headers: dict[str, str] | None = None  # added to the response (a key's x-ratelimit-* headers)
    key_id: int | None = None  # the key, once known (a refused request's row names it)
    asked: str | None = None  # the model the client asked for, once read


def trace_of(scope: Any) -> Trace | None:
    """The :class:`Trace` of the request whose ASGI scope this is (None outside the wrapper)."""
    state = scope.get("state")
    return state.get(_TRACE) if isinstance(state, dict) else None


def _incoming_id(scope: Any) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return value.decode("ascii") if _ID.fullmatch(value) else None
    return None


def _endpoint(path: str) -> str | None:
    found = _ENDPOINTS.get(path)
    if found is None and path.startswith("/v1/"):
        if path.startswith(("/v1/models/", "/v1/responses/")):  # one model's card; a stored response, its items
            return path.split("/")[2]
        return "other"
    return found


def _through_logging(level: int, message: str, fields: dict[str, Any]) -> None:
    access.log(level, message, extra=fields)


def observe(
    app: ASGIApp,
    metrics: GatewayMetrics,
    drain: Drain,
    line: AccessLine | None = None,
    refusals: Refusals | None = None,
) -> ASGIApp:
    """Wrap ``app`` (Litestar's ASGI handler) with request ids, access logs, /v1 metrics and drain refusal.

    ``line`` writes a request's log line (``minigate.gateway.ops.logs.JsonLines`` in ``minigate serve``); by default the
    line goes through the ``minigate.access`` logger. Either way that logger's level decides. ``refusals`` counts
    the /v1 requests refused with 401, 403 or 429 before a usage row was stored for them.
    """
    write = line or _through_logging

    # Typed loosely: Litestar's Scope union (HTTP | WebSocket TypedDicts) is narrower than what arrives here.
    async def handler(scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        trace = Trace(_incoming_id(scope) or new_request_id())
        scope.setdefault("state", {})[_TRACE] = trace
        header = (b"x-request-id", trace.request_id.encode())
        http_status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal http_status
            if message["type"] == "http.response.start":
                http_status = message["status"]
                extra = [(k.encode(), v.encode()) for k, v in trace.headers.items()] if trace.headers else []
                message["headers"] = [*message.get("headers", ()), header, *extra]
            await send(message)

        path = scope["path"]
        endpoint = _endpoint(path)
        try:
            if drain.stopping and endpoint is not None:
                await _refuse(send_with_id)
            else:
                await app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            status = trace.status or http_status
            if endpoint is not None:
                metrics.request(endpoint, status, trace.provider, seconds)
                if refusals is not None and trace.status is None and http_status in REFUSED_STATUSES:
                    client = scope.get("client")
                    code = scope["state"].get(ERROR_CODE)
                    address = str(client[0]) if client else None
                    refusals.note(http_status, code, trace.key_id, address, endpoint, trace.asked)
            # Probes (load balancers, compose healthchecks, Prometheus) would drown the request lines: DEBUG.
            level = logging.DEBUG if path in _PROBES and status < 400 else logging.INFO
            if access.isEnabledFor(level):
                fields: dict[str, Any] = {
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "latency_ms": round(seconds * 1000, 3),
                    "request_id": trace.request_id,
                }
                if trace.provider is not None:
                    fields.update(provider=trace.provider, model=trace.model)
                if endpoint is not None:
                    fields["fallbacks"] = trace.fallbacks
                if trace.error is not None:
                    fields["error"] = trace.error
                if http_status != status:
                    fields["http_status"] = http_status
                write(level, f"{scope['method']} {path} {status}", fields)

    return handler


async def _refuse(send: Send) -> None:
    headers = [(b"content-type", b"application/json"), (b"connection", b"close"), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _REFUSED, "more_body": False})

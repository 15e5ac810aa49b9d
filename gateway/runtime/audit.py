"""Recording admin actions: a middleware for the routers whose state-changing requests are admin actions.

:func:`audited` records every request but GET, HEAD and OPTIONS that reached a handler as someone: the web UI's
session dependencies name the actor in the scope (:data:`ACTOR`); elsewhere the ``Authorization`` header must be
an admin key. The action is the route (method and path template), the target its path parameters, the details
the body's field names and safe values (:func:`~minigate.gateway.storage.audit.safe_details`); never a response.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar.datastructures import State
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Send

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.audit import AuditEntry, safe_details

__all__ = ["ACTOR", "Actor", "audited"]

log = logging.getLogger(__name__)

ACTOR = "minigate_actor"  # the scope state entry naming who made a request (set by the web UI's session checks)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TYPED = re.compile(r":[a-z]+}")
_MAX_BODY = 65_536  # a larger JSON body is recorded by its size only
_TARGET_FIELDS = ("name", "agent", "model", "source", "provider")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made an admin request: in words, of what kind (``user``, ``key``, ``admin``), and their ids."""

    name: str
    kind: str
    user_id: int | None = None
    key_id: int | None = None


async def _key_actor(gateway: Gateway, authorization: str | None) -> Actor | None:
    try:
        key_id, admin = await gateway.identify(authorization)
    except GatewayError:
        return None
    if not admin:
        return None  # refused with 403 by the handler: not an admin action
    if key_id is None:
        return Actor("admin key", "admin")
    names = {k.id: k.name for k in await gateway.keys.list()}
    return Actor(f"key {key_id} ({names.get(key_id, '?')})", "key", gateway.keys.user_of(key_id), key_id)


def _details(scope: Any, body: bytes, size: int) -> dict[str, Any] | None:
    """The body the handler read, as field names and safe values (a form's or a JSON object's)."""
    if not size:
        return None
    if size > len(body):
        return {"body_bytes": size}
    kind = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), b"").split(b";")[0].strip()
    # The admin API reads JSON whatever the type says (curl -d sends a form type), so an object is read as JSON.
    if kind == b"application/x-www-form-urlencoded" and not body.lstrip().startswith(b"{"):
        form: dict[str, Any] = {}
        for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            if name == "_csrf":
                continue
            prior = form.get(name)
            form[name] = value if name not in form else [*prior, value] if isinstance(prior, list) else [prior, value]
        return safe_details(form)
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {"body_bytes": size}
    return safe_details(decoded) if isinstance(decoded, dict) else {"body": type(decoded).__name__}


def _target(scope: Any, details: dict[str, Any] | None) -> str | None:
    params = scope.get("path_params") or {}
    if params:
        return ", ".join(f"{k}={v}" for k, v in params.items())
    for name in _TARGET_FIELDS:
        value = (details or {}).get(name)
        if isinstance(value, str) and value:
            return f"{name}={value}"
    return None


async def _record(scope: Any, via: str, status: int, body: bytes, size: int) -> None:
    app_state: State = scope["litestar_app"].state
    gateway: Gateway | None = getattr(app_state, "gateway", None)
    if gateway is None or gateway.audit is None:
        return
    actor = scope.get("state", {}).get(ACTOR)
    if not isinstance(actor, Actor):
        authorization = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        actor = await _key_actor(gateway, authorization) if authorization else None
    if actor is None:
        return  # nobody got in: refused before any action
    details = _details(scope, body, size)
    template = _TYPED.sub("}", str(scope.get("path_template") or scope["path"]))
    client = scope.get("client")
    gateway.audit.note(
        AuditEntry(
            via=via,
            actor=actor.name,
            actor_kind=actor.kind,
            key_id=actor.key_id,
            user_id=actor.user_id,
            action=f"{scope['method']} {template}",
            target=_target(scope, details),
            status=status,
            details=details,
            client=str(client[0]) if client else None,
        )
    )


def audited(via: str) -> Callable[[ASGIApp], ASGIApp]:
    """A Litestar middleware recording the state-changing requests of a router as admin actions (``via``: "web",
    "api")."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def handler(scope: Any, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] in _SAFE_METHODS:
                await app(scope, receive, send)
                return
            status, size, kept = 500, 0, bytearray()

            async def watch(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            async def read() -> ReceiveMessage:  # keeps what the handler reads of the body (up to _MAX_BODY)
                nonlocal size
                message = await receive()
                if message["type"] == "http.request":
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size <= _MAX_BODY:
                        kept.extend(chunk)
                return message

            try:
                await app(scope, read, watch)
            finally:
                try:
                    await _record(scope, via, status, bytes(kept), size)
                except Exception:  # the action happened: a failed record must not turn it into an error
                    log.exception("could not record an admin action on %s", scope.get("path"))

        return handler

    return middleware

"""The API keys page (admin): create (the key is shown once, with a copy button), list, revoke (after a confirm
step that works without JavaScript; with it, the browser's own dialog asks instead)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from minigate.gateway.runtime.gateway import Gateway
from minigate.web.render import page
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["key_handlers"]


async def _render(web: WebState, gateway: Gateway, admin: Session, status: int = 200, **extra: Any) -> Response[str]:
    context: dict[str, Any] = {"created": None, "secret": None, "error": None, "revoked": None, "confirm": None}
    context.update(extra)
    return page(web, "keys.html", admin, status=status, keys=await gateway.keys.list(), **context)


@get("/keys")
async def keys_page(
    gateway: NamedDependency[Gateway], web: NamedDependency[WebState], admin: NamedDependency[Session]
) -> Response[str]:
    """Every key, revoked ones included."""
    return await _render(web, gateway, admin)


@post("/keys")
async def keys_create(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
) -> Response[str]:
    """Create a key and show it this once."""
    form = await request.form()
    name = str(form.get("name") or "").strip()
    try:
        info, secret = await gateway.keys.create(name, admin=form.get("admin") == "on")
    except ValueError as err:
        return await _render(web, gateway, admin, status=422, error=str(err))
    return await _render(web, gateway, admin, created=info, secret=secret)


@get("/keys/{key_id:int}/revoke")
async def keys_revoke_confirm(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
    key_id: FromPath[int],
) -> Response[str]:
    """Ask before revoking: the page's Revoke buttons lead here when JavaScript does not ask first."""
    key = next((k for k in await gateway.keys.list() if k.id == key_id and k.revoked_at is None), None)
    if key is None:
        return await _render(web, gateway, admin, status=404, error=f"There is no active key {key_id}.")
    return await _render(web, gateway, admin, confirm=key)


@post("/keys/{key_id:int}/revoke")
async def keys_revoke(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
    key_id: FromPath[int],
) -> Response[str]:
    """Revoke a key; it stops working at once in this process."""
    if not await gateway.keys.revoke(key_id):
        return await _render(web, gateway, admin, status=404, error=f"There is no active key {key_id}.")
    return await _render(web, gateway, admin, revoked=key_id)


def key_handlers() -> list[Any]:
    """The keys page routes."""
    return [keys_page, keys_create, keys_revoke_confirm, keys_revoke]

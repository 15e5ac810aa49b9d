"""The API keys page: create (the key is shown once, with a copy button), list, revoke (after a confirm step that
works without JavaScript; with it, the browser's own dialog asks instead).

An admin sees and manages every key, with whose it is; a person sees, creates and revokes only their own.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from minigate.gateway.ops.limits import person_scope
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.keys import ApiKeyInfo
from minigate.gateway.storage.users import UserStore
from minigate.web.key_policy import LIMIT_FIELDS, policy_form
from minigate.web.render import page
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["key_handlers"]


def _scope(member: Session) -> int | None:
    """The person whose keys ``member`` may see (None: an admin, every key)."""
    return None if member.admin else member.user_id


async def _keys(gateway: Gateway, member: Session) -> list[ApiKeyInfo]:
    if not member.admin and member.user_id is None:  # never "every key" for anyone but an admin
        return []
    return await gateway.keys.list(user_id=_scope(member))


async def _render(web: WebState, gateway: Gateway, member: Session, status: int = 200, **extra: Any) -> Response[str]:
    context: dict[str, Any] = {"created": None, "secret": None, "error": None, "revoked": None, "confirm": None}
    context["updated"] = None
    context.update(extra)
    people = await UserStore(gateway.database).list() if member.admin else []
    keys = await _keys(gateway, member)
    limits = gateway.limits
    spent = {k.id: limits.spent(k.id) for k in keys if k.policy is not None} if limits is not None else {}
    person = member.user_id
    own = await gateway.keys.load_person(person) if person is not None and not member.admin else None
    if own is not None and person is not None and limits is not None:  # what binds all their keys, and its use
        spent[0] = limits.spent(person_scope(person))
    return page(
        web,
        "keys.html",
        member,
        status=status,
        keys=keys,
        spent=spent,
        limit_fields=LIMIT_FIELDS,
        people=people,
        user_names={p.id: p.name for p in people},
        own=own,
        **context,
    )


@get("/keys")
async def keys_page(
    gateway: NamedDependency[Gateway], web: NamedDependency[WebState], member: NamedDependency[Session]
) -> Response[str]:
    """Every key (a person: their own), revoked ones included."""
    return await _render(web, gateway, member)


@post("/keys")
async def keys_create(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    member: NamedDependency[Session],
) -> Response[str]:
    """Create a key and show it this once: a person's own; an admin's for whom the form says."""
    form = await request.form()
    name = str(form.get("name") or "").strip()
    admin_key, user_id = form.get("admin") == "on", member.user_id
    if member.admin:
        whose = str(form.get("user") or "")
        user_id = int(whose) if whose.isdigit() and len(whose) < 10 else None
        if user_id is not None and await UserStore(gateway.database).get(user_id) is None:
            return await _render(web, gateway, member, status=422, error="There is no such person.")
    elif admin_key:
        return await _render(web, gateway, member, status=403, error="Only an admin may create admin keys.")
    try:
        policy, expires = policy_form(form) if member.admin else (None, None)  # only an admin sets limits
        info, secret = await gateway.keys.create(
            name, admin=admin_key, user_id=user_id, policy=policy, expires_at=expires
        )
    except ValueError as err:
        return await _render(web, gateway, member, status=422, error=str(err))
    return await _render(web, gateway, member, created=info, secret=secret)


@get("/keys/{key_id:int}/revoke")
async def keys_revoke_confirm(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    member: NamedDependency[Session],
    key_id: FromPath[int],
) -> Response[str]:
    """Ask before revoking: the page's Revoke buttons lead here when JavaScript does not ask first."""
    key = next((k for k in await _keys(gateway, member) if k.id == key_id and k.revoked_at is None), None)
    if key is None:
        return await _render(web, gateway, member, status=404, error=f"There is no active key {key_id}.")
    return await _render(web, gateway, member, confirm=key)


@post("/keys/{key_id:int}/revoke")
async def keys_revoke(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    member: NamedDependency[Session],
    key_id: FromPath[int],
) -> Response[str]:
    """Revoke a key (a person: only their own); it stops working at once in this process."""
    scope = _scope(member)
    if scope is None and not member.admin:  # a member is an admin or a person; this cannot happen, but never all
        return await _render(web, gateway, member, status=404, error=f"There is no active key {key_id}.")
    if not await gateway.keys.revoke(key_id, user_id=scope):
        return await _render(web, gateway, member, status=404, error=f"There is no active key {key_id}.")
    return await _render(web, gateway, member, revoked=key_id)


@post("/keys/{key_id:int}/policy")
async def keys_policy(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    member: NamedDependency[Session],
    key_id: FromPath[int],
) -> Response[str]:
    """Set a key's policy and expiry (admins only: a person cannot raise their own limits)."""
    if not member.admin:
        return await _render(web, gateway, member, status=403, error="Only an admin may change a key's limits.")
    try:
        policy, expires = policy_form(await request.form())
    except ValueError as err:
        return await _render(web, gateway, member, status=422, error=str(err))
    if not await gateway.keys.set_policy(key_id, policy, expires):
        return await _render(web, gateway, member, status=404, error=f"There is no key {key_id}.")
    return await _render(web, gateway, member, updated=key_id)


def key_handlers() -> list[Any]:
    """The keys page routes."""
    return [keys_page, keys_create, keys_revoke_confirm, keys_revoke, keys_policy]

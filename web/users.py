"""The people page (admin): create a person, list everyone, disable or enable one, set a new password, set their
own limits."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from minigate.gateway.ops.limits import person_scope
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.users import MIN_PASSWORD, UserStore
from minigate.web.key_policy import LIMIT_FIELDS, policy_form
from minigate.web.render import page
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["user_handlers"]


async def _render(web: WebState, gateway: Gateway, admin: Session, status: int = 200, **extra: Any) -> Response[str]:
    context: dict[str, Any] = {"done": None, "error": None}
    context.update(extra)
    people = await UserStore(gateway.database).list()
    limits = gateway.limits
    spent = {p.id: limits.spent(person_scope(p.id)) for p in people if p.policy} if limits is not None else {}
    return page(
        web,
        "users.html",
        admin,
        status=status,
        people=people,
        min_password=MIN_PASSWORD,
        spent=spent,
        limit_fields=LIMIT_FIELDS,
        **context,
    )


@get("/users")
async def users_page(
    gateway: NamedDependency[Gateway], web: NamedDependency[WebState], admin: NamedDependency[Session]
) -> Response[str]:
    """Everyone, disabled people included."""
    return await _render(web, gateway, admin)


@post("/users")
async def users_create(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
) -> Response[str]:
    """Create a person with a first password."""
    form = await request.form()
    name, password = str(form.get("name") or "").strip(), str(form.get("password") or "")
    try:
        person = await UserStore(gateway.database).create(name, password, admin=form.get("admin") == "on")
    except ValueError as err:
        return await _render(web, gateway, admin, status=422, error=str(err))
    return await _render(web, gateway, admin, done=f"{person.name} can log in now.")


@post("/users/{user_id:int}/disable")
async def users_disable(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
    user_id: FromPath[int],
) -> Response[str]:
    """Disable a person: their sessions end and their keys stop working."""
    if user_id == admin.user_id:
        return await _render(web, gateway, admin, status=422, error="You cannot disable yourself.")
    if not await UserStore(gateway.database).disable(user_id):
        return await _render(web, gateway, admin, status=404, error=f"There is no active person {user_id}.")
    gateway.keys.forget_user(user_id)  # their keys stop at once here (other replicas: within the key cache's 2 s)
    return await _render(web, gateway, admin, done=f"Person {user_id} disabled.")


@post("/users/{user_id:int}/enable")
async def users_enable(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
    user_id: FromPath[int],
) -> Response[str]:
    """Let a disabled person in again."""
    if not await UserStore(gateway.database).enable(user_id):
        return await _render(web, gateway, admin, status=404, error=f"There is no disabled person {user_id}.")
    gateway.keys.forget_user(user_id)  # their keys work again at once here
    return await _render(web, gateway, admin, done=f"Person {user_id} enabled.")


@post("/users/{user_id:int}/password")
async def users_password(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
    user_id: FromPath[int],
) -> Response[str]:
    """Set a person's password (a reset: the admin tells them the new one)."""
    password = str((await request.form()).get("password") or "")
    try:
        found = await UserStore(gateway.database).set_password(user_id, password)
    except ValueError as err:
        return await _render(web, gateway, admin, status=422, error=str(err))
    if not found:
        return await _render(web, gateway, admin, status=404, error=f"There is no person {user_id}.")
    return await _render(web, gateway, admin, done=f"Person {user_id} has a new password.")


@post("/users/{user_id:int}/policy")
async def users_policy(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
    user_id: FromPath[int],
) -> Response[str]:
    """Set a person's own limits: they bind their web chat and every key of theirs (a key's own limits apply too)."""
    try:
        policy, _ = policy_form(await request.form())
    except ValueError as err:
        return await _render(web, gateway, admin, status=422, error=str(err))
    if not await UserStore(gateway.database).set_policy(user_id, policy):
        return await _render(web, gateway, admin, status=404, error=f"There is no person {user_id}.")
    gateway.keys.person_changed(user_id, policy)
    return await _render(web, gateway, admin, done=f"Person {user_id}'s limits saved.")


def user_handlers() -> list[Any]:
    """The people page routes."""
    return [users_page, users_create, users_disable, users_enable, users_password, users_policy]

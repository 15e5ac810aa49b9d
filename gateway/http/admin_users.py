"""The admin HTTP API for people: ``/admin/api/users`` (list, create, read, change, disable).

Every handler needs an admin key. Nobody is ever deleted: ``DELETE`` disables, as the People page does, so a
person's conversations, keys and usage rows keep naming them (and an id is never handed to someone new); their
sessions end and their keys stop until they are enabled again. Password hashes never leave the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from minigate.gateway.core.errors import GatewayError, InvalidRequest
from minigate.gateway.http.admin_json import (
    MAX_ID,
    checked_policy,
    decode_body,
    json_response,
    not_found,
    require_admin,
)
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.key_policy import KeyPolicy
from minigate.gateway.storage.users import NameTaken, UserInfo, UserStore

__all__ = ["UserCreate", "UserList", "UserUpdate", "UserView", "admin_user_handlers"]


class UserCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /admin/api/users``: a name (letters, digits and ``. _ @ -``), a first password (8 characters or
    more), and whether the person is an admin."""

    name: str
    password: str
    admin: bool = False
    policy: dict[str, Any] | None = None  # their own limits, over their web chat and all their keys (a key's shape)


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PATCH /admin/api/users/{id}``: what is given changes. ``password`` sets a new one (a reset: their
    sessions end); ``admin`` gives or takes the flag (their sessions end, the next login has it); ``disabled``
    stops or lets in again the person and their keys; ``policy`` replaces their own limits (null clears them)."""

    admin: bool | msgspec.UnsetType = msgspec.UNSET
    policy: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    disabled: bool | msgspec.UnsetType = msgspec.UNSET
    password: str | msgspec.UnsetType = msgspec.UNSET


class UserView(msgspec.Struct, kw_only=True):
    """A person as the admin API shows them: never their password or its hash."""

    id: int
    name: str
    admin: bool
    active: bool
    created_at: datetime
    disabled_at: datetime | None = None
    policy: KeyPolicy | None = None  # their own limits, over their web chat and all their keys


class UserList(msgspec.Struct):
    """``GET /admin/api/users``: everyone, disabled people included, oldest first."""

    users: list[UserView]


def user_view(person: UserInfo) -> UserView:
    """What the API shows of ``person``."""
    return UserView(
        id=person.id,
        name=person.name,
        admin=person.admin,
        active=person.active,
        created_at=person.created_at,
        disabled_at=person.disabled_at,
        policy=person.policy,
    )


async def _person(store: UserStore, user_id: int) -> UserInfo:
    found = await store.get(user_id) if 0 < user_id <= MAX_ID else None
    if found is None:
        raise not_found(f"person {user_id}", "user_not_found")
    return found


def _not_self(gateway: Gateway, caller: int | None, user_id: int) -> None:
    if gateway.keys.user_of(caller) == user_id:  # their own key would stop with them: nobody could undo it here
        raise InvalidRequest("A key cannot disable the person it belongs to.", param="disabled", code="self_disable")


@get("/users")
async def list_users(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Everyone, disabled people included, oldest first."""
    await require_admin(request, gateway)
    return json_response(UserList([user_view(p) for p in await UserStore(gateway.database).list()]))


@post("/users", status_code=201)
async def create_user(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Create a person who logs in with ``name`` and ``password``; 409 when the name is taken."""
    await require_admin(request, gateway)
    body = decode_body(await request.body(), UserCreate)
    policy, store = checked_policy(body.policy), UserStore(gateway.database)
    try:
        person = await store.create(body.name, body.password, admin=body.admin)
    except NameTaken as err:
        raise GatewayError(f"{str(err).capitalize()}.", status=409, param="name", code="user_exists") from None
    except ValueError as err:
        param = "password" if "password" in str(err) else "name"
        raise InvalidRequest(f"{str(err).capitalize()}.", param=param) from None
    if policy is not None:
        await store.set_policy(person.id, policy)
        person = msgspec.structs.replace(person, policy=policy)
    return json_response(user_view(person), 201)


@get("/users/{user_id:int}")
async def get_user(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], user_id: FromPath[int]
) -> Response[bytes]:
    """One person."""
    await require_admin(request, gateway)
    return json_response(user_view(await _person(UserStore(gateway.database), user_id)))


@patch("/users/{user_id:int}")
async def update_user(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], user_id: FromPath[int]
) -> Response[bytes]:
    """Reset a person's password, give or take their admin flag, disable or enable them, set their own limits."""
    caller = await require_admin(request, gateway)
    body = decode_body(await request.body(), UserUpdate)
    store = UserStore(gateway.database)
    person = await _person(store, user_id)
    if body.disabled is True:
        _not_self(gateway, caller, user_id)
    policy = checked_policy(body.policy if isinstance(body.policy, dict) else None)  # checked before anything changes
    if isinstance(body.password, str):  # first: a refused password leaves everything as it was
        try:
            await store.set_password(user_id, body.password)
        except ValueError as err:
            raise InvalidRequest(f"{str(err).capitalize()}.", param="password") from None
    if isinstance(body.admin, bool) and body.admin != person.admin:
        await store.set_admin(user_id, body.admin)
    if isinstance(body.disabled, bool) and body.disabled == person.active:
        await (store.disable(user_id) if body.disabled else store.enable(user_id))
        gateway.keys.forget_user(user_id)  # their keys stop (or work again) at once here, elsewhere within 2 s
    if body.policy is not msgspec.UNSET:
        await store.set_policy(user_id, policy)
        gateway.keys.person_changed(user_id, policy)  # at once here, elsewhere within 2 s
    return json_response(user_view(await _person(store, user_id)))


@delete("/users/{user_id:int}", status_code=200)
async def disable_user(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], user_id: FromPath[int]
) -> Response[bytes]:
    """Disable a person (nobody is deleted: their conversations, keys and usage stay theirs); their sessions end
    and their keys stop. Disabling someone already disabled changes nothing."""
    caller = await require_admin(request, gateway)
    store = UserStore(gateway.database)
    await _person(store, user_id)
    _not_self(gateway, caller, user_id)
    if await store.disable(user_id):
        gateway.keys.forget_user(user_id)
    return json_response(user_view(await _person(store, user_id)))


def admin_user_handlers() -> list[Any]:
    """The people handlers (mounted under ``/admin/api`` with the others)."""
    return [list_users, create_user, get_user, update_user, disable_user]

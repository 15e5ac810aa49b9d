"""The admin HTTP API for keys and their policies: ``/admin/api/keys``.

Every handler needs an admin key. A policy is the JSON object of
:class:`~minigate.gateway.storage.key_policy.KeyPolicy`; ``expires_at`` a date or ISO 8601 time (UTC), or null.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from minigate.gateway.core.errors import GatewayError, InvalidRequest
from minigate.gateway.http.admin_json import MAX_ID, checked_policy, decode_body, json_response, require_admin
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.key_policy import KeyPolicy, encode_policy, parse_expiry
from minigate.gateway.storage.keys import ApiKeyInfo
from minigate.gateway.storage.users import UserStore

__all__ = ["KeyCreate", "KeyList", "KeyUpdate", "KeyView", "Revoked", "admin_key_handlers", "key_view"]

_UNSET: Any = msgspec.UNSET


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /admin/api/keys``."""

    name: str
    admin: bool = False
    user_id: int | None = None  # whose key (None: the admin's); their own limits bind it too
    policy: dict[str, Any] | None = None
    expires_at: str | None = None


class KeyUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PATCH /admin/api/keys/{id}``: what is given replaces what was (``policy: null`` clears it)."""

    policy: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    expires_at: str | msgspec.UnsetType | None = msgspec.UNSET


class KeyView(msgspec.Struct, kw_only=True):
    """A key as the admin API shows it (the OpenAPI document's schema; ``key`` only in the answer that made it)."""

    id: int
    name: str
    prefix: str
    created_at: str
    revoked_at: str | None = None
    last_used_at: str | None = None
    admin: bool = False
    user_id: int | None = None
    policy: KeyPolicy | None = None
    expires_at: str | None = None
    used: dict[str, float] | None = None  # this minute, day and month, and calls in flight
    key: str | None = None


class KeyList(msgspec.Struct):
    """``GET /admin/api/keys``."""

    keys: list[KeyView]


class Revoked(msgspec.Struct):
    """``DELETE /admin/api/keys/{id}``."""

    id: int
    revoked: bool


def _checked(raw: dict[str, Any] | None, expires: str | None) -> tuple[Any, Any]:
    policy = checked_policy(raw)
    try:
        return policy, parse_expiry(expires)
    except ValueError as err:
        raise InvalidRequest(str(err), param="expires_at") from None


def key_view(gateway: Gateway, key: ApiKeyInfo) -> dict[str, Any]:
    """A key as the API shows it: never the key itself; its policy and what it used this minute, day and month."""
    view: dict[str, Any] = msgspec.to_builtins(key)
    view["policy"] = msgspec.json.decode(encode_policy(key.policy) or "null")
    if gateway.limits is not None:
        view["used"] = {**gateway.limits.spent(key.id), "in_flight": gateway.limits.counters.in_flight(key.id)}
    return view


@get("/keys")
async def list_keys(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Every key with its policy and use."""
    await require_admin(request, gateway)
    return json_response({"keys": [key_view(gateway, k) for k in await gateway.keys.list()]})


@post("/keys", status_code=201)
async def create_key(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Create a key; the answer holds the key itself, shown only this once."""
    await require_admin(request, gateway)
    body: KeyCreate = decode_body(await request.body(), KeyCreate)
    policy, expires = _checked(body.policy, body.expires_at)
    whose = body.user_id
    if whose is not None and (not 0 < whose <= MAX_ID or await UserStore(gateway.database).get(whose) is None):
        raise InvalidRequest(f"There is no person {whose}.", param="user_id", code="user_not_found")
    try:
        info, secret = await gateway.keys.create(
            body.name, admin=body.admin, user_id=whose, policy=policy, expires_at=expires
        )
    except ValueError as err:
        raise InvalidRequest(str(err), param="name") from None
    return json_response({**key_view(gateway, info), "key": secret}, 201)


@patch("/keys/{key_id:int}")
async def update_key(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], key_id: FromPath[int]
) -> Response[bytes]:
    """Change a key's policy or expiry."""
    await require_admin(request, gateway)
    body: KeyUpdate = decode_body(await request.body(), KeyUpdate)
    found = next((k for k in await gateway.keys.list() if k.id == key_id), None)
    if found is None:
        raise GatewayError(f"No key {key_id}.", status=404, code="key_not_found")
    raw = body.policy if isinstance(body.policy, dict) else None
    given_expiry = body.expires_at if isinstance(body.expires_at, str) else None
    policy, expires = _checked(raw, given_expiry)
    if body.policy is _UNSET:
        policy = found.policy
    await gateway.keys.set_policy(key_id, policy, False if body.expires_at is _UNSET else expires)
    updated = next(k for k in await gateway.keys.list() if k.id == key_id)
    return json_response(key_view(gateway, updated))


@delete("/keys/{key_id:int}", status_code=200)
async def revoke_key(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], key_id: FromPath[int]
) -> Response[bytes]:
    """Revoke a key."""
    await require_admin(request, gateway)
    if not 0 < key_id <= MAX_ID or not await gateway.keys.revoke(key_id):
        raise GatewayError(f"No active key {key_id}.", status=404, code="key_not_found")
    return json_response({"id": key_id, "revoked": True})


def admin_key_handlers() -> list[Any]:
    """The key handlers (mounted under ``/admin/api`` with the others)."""
    return [list_keys, create_key, update_key, revoke_key]

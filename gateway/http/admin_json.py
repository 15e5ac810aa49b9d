"""What every admin API handler shares: the admin check, JSON answers, bodies decoded into typed structs."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from minigate.gateway.core.errors import GatewayError, InvalidRequest
from minigate.gateway.core.wire import decode_json
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.key_policy import KeyPolicy, policy_from

__all__ = ["MAX_ID", "checked_policy", "decode_body", "json_response", "not_found", "require_admin"]

T = TypeVar("T")
_FIELD = re.compile(r"at `\$\.(\w+)")  # msgspec's "Expected `str`, got `int` - at `$.name`"
MAX_ID = 2**31 - 1  # the id columns' INTEGER: a larger id names nothing (and must not reach the database)


async def require_admin(request: Request[Any, Any, Any], gateway: Gateway) -> int | None:
    """The caller's key id (None: the bootstrap key); 401 without a valid key, 403 for a key that is no admin's."""
    return await gateway.authenticate_admin(request.headers.get("authorization"))


def json_response(body: Any, status: int = 200) -> Response[bytes]:
    """``body`` (structs, dicts, lists) as a JSON answer."""
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def decode_body(body: bytes, struct: type[T]) -> T:
    """``body`` as ``struct``; 400 naming what is wrong (not JSON, an unknown field, a wrong type)."""
    raw = decode_json(body)
    try:
        return msgspec.convert(raw, struct)
    except msgspec.ValidationError as err:
        field = _FIELD.search(str(err))
        raise InvalidRequest(f"Invalid body: {err}.", param=field.group(1) if field else None) from None


def not_found(what: str, code: str) -> GatewayError:
    """404 in the API's error shape: ``No person 7.``"""
    return GatewayError(f"No {what}.", status=404, code=code)


def checked_policy(raw: dict[str, Any] | None) -> KeyPolicy | None:
    """A key's or a person's policy from a body's JSON object (None or ``{}``: none); 400 naming ``policy``."""
    try:
        return policy_from(raw)
    except ValueError as err:
        raise InvalidRequest(str(err), param="policy") from None

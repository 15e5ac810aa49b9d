"""Errors a client can see, always in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.

Error tree::

    GatewayError                 anything answered with an error status; carries type, code, param, headers
    ├── InvalidRequest           400: the body is not a valid request (param names the field)
    ├── AuthenticationFailed     401: no key, or not a valid one
    ├── ModelNotFound            404: no agent, alias or provider model of that name
    └── ChainFailed              every deployment of the chain failed or was cooling down

:func:`exception_handlers` maps Litestar's own and unexpected exceptions to the same shape (never a traceback).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from gateway.core.headers import header_values

__all__ = [
    "AuthenticationFailed",
    "ChainFailed",
    "GatewayError",
    "InvalidRequest",
    "ModelNotFound",
    "error_body",
    "exception_handlers",
]

log = logging.getLogger("minigate")


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class GatewayError(Exception):
    """An error answered to the client with ``status`` and OpenAI's error body."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body for this error."""
        return error_body(self.message, self.type, self.param, self.code)

    def encode(self) -> bytes:
        """The JSON body, encoded."""
        return msgspec.json.encode(self.body())


class InvalidRequest(GatewayError):
    """400: the request body is malformed or a field is wrong."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, status=400, param=param, code=code)


class AuthenticationFailed(GatewayError):
    """401: missing or invalid API key."""

    def __init__(self, message: str = "Invalid or missing API key. Send 'Authorization: Bearer <key>'.") -> None:
        super().__init__(message, status=401, type="invalid_request_error", code="invalid_api_key")


class ModelNotFound(GatewayError):
    """404: nothing routes the requested model name."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model {model!r} does not exist: it is no agent, alias or provider model of this gateway. "
            "GET /v1/models lists what is available.",
            status=404,
            param="model",
            code="model_not_found",
        )


class ChainFailed(GatewayError):
    """Every deployment in the chain failed, was cooling down, or the deadline passed."""


_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def _from_gateway(_: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    headers = header_values(exc.headers)
    return Response(exc.encode(), status_code=exc.status, media_type="application/json", headers=headers)


def _from_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    message = str(exc.detail) if exc.detail else "error"
    if status == 404:
        message = f"Unknown path {request.url.path!r}."
    elif status == 413:
        message = "Request body too large."
    kind = _STATUS_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = msgspec.json.encode(error_body(message, kind, None, None))
    headers = header_values(dict(exc.headers or {}))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _from_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    body = error_body("The gateway hit an internal error; it has been logged.", "server_error", None, None)
    return Response(msgspec.json.encode(body), status_code=500, media_type="application/json")


def exception_handlers() -> ExceptionHandlersMap:
    """Litestar exception handlers mapping every error to OpenAI's shape."""
    return {GatewayError: _from_gateway, HTTPException: _from_http, Exception: _from_unexpected}

"""Errors a client can see, in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, or in Anthropic's
``{"type": "error", "error": {"type", "message"}}`` under ``/v1/messages`` (:func:`anthropic_error_body`).

Error tree::

    GatewayError                 anything answered with an error status; carries type, code, param, headers
    ├── InvalidRequest           400: the body is not a valid request (param names the field)
    ├── AuthenticationFailed     401: no key, or not a valid one
    ├── ModelNotFound            404: no agent, alias or provider model of that name
    └── ChainFailed              every deployment of the chain failed or was cooling down

:func:`exception_handlers` maps Litestar's own and unexpected exceptions to the same shapes (never a traceback).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from minigate.gateway.core.headers import header_values

__all__ = [
    "ANTHROPIC_PATH",
    "ERROR_CODE",
    "AuthenticationFailed",
    "ChainFailed",
    "GatewayError",
    "InvalidRequest",
    "ModelNotFound",
    "anthropic_error_body",
    "error_body",
    "exception_handlers",
]

log = logging.getLogger("minigate")


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# Anthropic's error types by HTTP status (its API reference, "Errors"); other statuses by class below.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

ERROR_CODE = "minigate_error_code"  # the scope state entry holding the code of the error a request was answered with
ANTHROPIC_PATH = "/v1/messages"  # its count_tokens and unknown paths below it answer in Anthropic's shape too


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error object for an answer with ``status`` (its ``error`` stream event has the same shape)."""
    kind = _ANTHROPIC_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _anthropic(request: Request[Any, Any, Any]) -> bool:
    path = request.url.path
    return path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + "/")


def _encode_error(request: Request[Any, Any, Any], status: int, body: dict[str, Any]) -> bytes:
    """``body`` (OpenAI's shape), or its message in Anthropic's shape when the request was to its API."""
    if _anthropic(request):
        body = anthropic_error_body(status, body["error"]["message"])
    return msgspec.json.encode(body)


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


def _from_gateway(request: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    if exc.code is not None:  # the request wrapper records refused requests by their code
        request.scope.setdefault("state", {})[ERROR_CODE] = exc.code
    headers = header_values(exc.headers)
    body = _encode_error(request, exc.status, exc.body())
    return Response(body, status_code=exc.status, media_type="application/json", headers=headers)


def _from_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    message = str(exc.detail) if exc.detail else "error"
    if status == 404:
        message = f"Unknown path {request.url.path!r}."
    elif status == 413:
        message = "Request body too large."
    param = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]  # Litestar's own check of a query or path parameter: name it, say what it expects
        if isinstance(first, dict) and isinstance(first.get("key"), str):
            param = first["key"][:100]
            message = f"Invalid parameter {param!r}: {str(first.get('message', 'a wrong value'))[:300]}."
    kind = _STATUS_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = _encode_error(request, status, error_body(message, kind, param, None))
    headers = header_values(dict(exc.headers or {}))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _from_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    body = error_body("The gateway hit an internal error; it has been logged.", "server_error", None, None)
    return Response(_encode_error(request, 500, body), status_code=500, media_type="application/json")


def exception_handlers() -> ExceptionHandlersMap:
    """Litestar exception handlers mapping every error to OpenAI's shape (Anthropic's under ``/v1/messages``)."""
    return {GatewayError: _from_gateway, HTTPException: _from_http, Exception: _from_unexpected}

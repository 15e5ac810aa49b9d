"""OpenAI wire formats: the request fields the gateway interprets, and the bodies it builds itself.

Requests are checked against these structs but forwarded as the client's own JSON object (minus routing
fields), so fields the gateway does not interpret (tools, response_format, logprobs, seed, ...) reach a remote
provider unchanged. Unknown fields are therefore allowed here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import msgspec
from msgspec import Meta

from gateway.config import split_validation_error
from gateway.errors import InvalidRequest

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "Message",
    "ModelCard",
    "ModelList",
    "StreamOptions",
    "decode_request",
]

PositiveInt = Annotated[int, Meta(ge=1)]
T = TypeVar("T")


class StreamOptions(msgspec.Struct, kw_only=True):
    """``stream_options``."""

    include_usage: bool = False


class Message(msgspec.Struct, kw_only=True):
    """One chat message; content may be a string, a list of parts, or null (tool calls)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class _Common(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    user: str | None = None


class ChatCompletionRequest(_Common, kw_only=True):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[Message], Meta(min_length=1)]
    max_completion_tokens: PositiveInt | None = None


class CompletionRequest(_Common, kw_only=True):
    """``POST /v1/completions``."""

    prompt: str | list[str | int | list[int]]


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    """``POST /v1/embeddings``."""

    model: Annotated[str, Meta(min_length=1, max_length=256)]
    input: str | list[str | int | list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInt | None = None


class ModelCard(msgspec.Struct, kw_only=True):
    """One entry of ``GET /v1/models``; ``minigate`` says what kind of route it is."""

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "minigate"
    minigate: dict[str, Any] = msgspec.field(default_factory=dict)


class ModelList(msgspec.Struct, kw_only=True):
    """``GET /v1/models``."""

    data: list[ModelCard]
    object: str = "list"


def _param(where: str) -> str | None:
    return where.lstrip(".") or None


def decode_request(body: bytes, struct: type[T]) -> tuple[T, dict[str, Any]]:
    """Decode a JSON body into ``struct`` (checked) and the raw object (to forward); 400 on any problem."""
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as err:
        raise InvalidRequest(f"The body is not valid JSON: {err}.") from None
    if not isinstance(raw, dict):
        raise InvalidRequest("The body must be a JSON object.")
    try:
        parsed: T = msgspec.convert(raw, struct)
        return parsed, raw
    except msgspec.ValidationError as err:
        message, where = split_validation_error(err)
        missing = re.match(r"Object missing required field `(.+)`", message)
        if missing:
            _raise(f"Missing required parameter: '{missing.group(1)}'.", missing.group(1))
        param = _param(where)
        _raise(f"Invalid value for '{param}': {message.replace('`', '')}." if param else message, param)


def _raise(message: str, param: str | None) -> NoReturn:
    raise InvalidRequest(message, param=param, code="invalid_value" if param else None)

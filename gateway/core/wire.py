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

from minigate.gateway.core.errors import InvalidRequest

__all__ = [
    "JSON_DECODE_ERRORS",
    "MAX_MESSAGES",
    "MAX_N",
    "MAX_TOKENS",
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "Message",
    "ModelCard",
    "ModelList",
    "StreamOptions",
    "decode_json",
    "decode_request",
    "split_validation_error",
]

MAX_MESSAGES = 2048  # OpenAI's own limit on messages (and on embedding inputs)
MAX_TOKENS = 1 << 20  # no model answers with a million tokens; larger values are mistakes (2**31, -1 as unsigned)
MAX_N = 128  # OpenAI's limit on choices per request

PositiveInt = Annotated[int, Meta(ge=1)]
TokenCount = Annotated[int, Meta(ge=1, le=MAX_TOKENS)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
Int64 = Annotated[int, Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
T = TypeVar("T")
# What msgspec.json.decode raises for bytes that are not JSON: bad UTF-8 is a DecodeError from msgspec 0.23 on,
# Python's UnicodeDecodeError before.
JSON_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)


class StreamOptions(msgspec.Struct, kw_only=True):
    """``stream_options``."""

    include_usage: bool = False


class Message(msgspec.Struct, kw_only=True):
    """One chat message; content may be a string, a list of parts, or null (tool calls)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class _Common(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    n: Annotated[int, Meta(ge=1, le=MAX_N)] | None = None
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    seed: Int64 | None = None
    user: str | None = None


class ChatCompletionRequest(_Common, kw_only=True):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[Message], Meta(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: TokenCount | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Common, kw_only=True):
    """``POST /v1/completions``."""

    prompt: str | list[str | int | list[int]]
    echo: bool | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    best_of: Annotated[int, Meta(ge=1, le=20)] | None = None
    suffix: str | None = None


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    """``POST /v1/embeddings``."""

    model: Annotated[str, Meta(min_length=1, max_length=256)]
    input: str | Annotated[list[str | int | list[int]], Meta(min_length=1, max_length=MAX_MESSAGES)]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Meta(ge=1, le=1 << 16)] | None = None
    user: str | None = None


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


def decode_json(body: bytes) -> Any:
    """Any JSON document, or a 400 saying what is wrong with it (never a server error).

    The verdict is the gateway's own, not msgspec's: which error bad UTF-8 raises differs between its versions
    (0.22 raises Python's UnicodeDecodeError where it builds a str, 0.23 a DecodeError with its own text), so
    once decoding failed the body's UTF-8 is checked here.
    """
    try:
        return msgspec.json.decode(body)
    except JSON_DECODE_ERRORS as err:
        _refuse_bad_utf8(body)
        raise InvalidRequest(f"The body is not valid JSON: {str(err).rstrip('.')}.") from None
    except RecursionError:
        raise InvalidRequest("The body is nested too deeply to be a request.") from None


def _refuse_bad_utf8(body: bytes) -> None:
    """A 400 naming the first byte that is not UTF-8, if there is one (JSON is UTF-8: RFC 8259)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = body[err.start : err.start + 1].hex()
        raise InvalidRequest(f"The body is not valid UTF-8: the byte 0x{bad} at offset {err.start}.") from None


_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)


def split_validation_error(err: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's ``Expected `int`, got `str` - at `$.a.b``` as ``("Expected `int`, got `str`", ".a.b")``."""
    m = _AT.match(str(err))
    return (m.group(1), m.group(2) or "") if m else (str(err), "")


def _param(where: str) -> str | None:
    return where.lstrip(".") or None


def decode_request(body: bytes, struct: type[T]) -> tuple[T, dict[str, Any]]:
    """Decode a JSON body into ``struct`` (checked) and the raw object (to forward); 400 on any problem."""
    raw = decode_json(body)
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

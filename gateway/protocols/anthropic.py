"""Anthropic's Messages API, the request half: the request checked and translated onto a chat-completions body, and
its prompt's size estimated (``count_tokens``). The answer half is :mod:`minigate.gateway.protocols.anthropic_out`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from minigate.gateway.core.errors import InvalidRequest
from minigate.gateway.core.wire import MAX_MESSAGES, MAX_TOKENS, ChatCompletionRequest, split_validation_error

__all__ = [
    "CountTokensRequest",
    "MessagesRequest",
    "Translated",
    "chat_request",
    "estimate_tokens",
    "prompt_body",
    "translate",
]

_HISTORY_ONLY = ("thinking", "redacted_thinking")  # the model's own reasoning, resent: dropped (a tuple: a block's
# type may be any JSON value, and a list or object is no set member)
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English and code with BPE vocabularies
TOKENS_PER_MESSAGE = 4  # a chat template's role markers and separators
TOKENS_PER_IMAGE = 1000  # unknown size: about a 900x900 picture by Anthropic's (width * height / 750)


class InMessage(msgspec.Struct, kw_only=True):
    """One entry of ``messages``: a user or assistant turn, its content a string or a list of blocks."""

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class _Prompt(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    messages: Annotated[list[InMessage], Meta(min_length=1, max_length=MAX_MESSAGES)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(_Prompt, kw_only=True):
    """``POST /v1/messages``: the fields the gateway reads. Unknown ones (``context_management``,
    ``service_tier``, ``container``, ``mcp_servers``, ``cache_control`` on blocks, ...) are accepted and ignored."""

    max_tokens: Annotated[int, Meta(ge=1, le=MAX_TOKENS)]
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    metadata: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None


class CountTokensRequest(_Prompt, kw_only=True):
    """``POST /v1/messages/count_tokens``: the prompt of a Messages request, without ``max_tokens``."""


@dataclass(slots=True)
class Translated:
    """The chat-completions body for a Messages request, and what the answer's translation needs to know.

    ``dropped`` names request fields that would change the answer but could not be honoured (the
    ``x-minigate-dropped`` response header lists them).
    """

    body: dict[str, Any]
    model: str
    stop_sequences: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _invalid(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value" if param else None)


def _text(block: dict[str, Any], param: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _invalid(f"Invalid value for '{param}.text': expected a string.", param)
    return text


def _system(system: str | list[dict[str, Any]] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    texts = []
    for i, block in enumerate(system):
        if block.get("type") != "text":
            raise _invalid(f"system[{i}] is a {block.get('type')!r} block; the system prompt takes text blocks.")
        texts.append(_text(block, f"system[{i}]"))
    return "\n\n".join(texts) or None


def _image(block: dict[str, Any], param: str) -> dict[str, Any]:
    """An image block as a chat ``image_url`` part (base64 data becomes a data URL)."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise _invalid(f"{param}.source needs a media_type and base64 data.", param)
        url = f"data:{media};base64,{data}"
    elif kind == "url" and isinstance(source, dict) and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _invalid(f"{param}.source of type {kind!r} is not supported; send base64 data or a URL.", param)
    return {"type": "image_url", "image_url": {"url": url}}


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string (paragraphs apart), else chat parts in order."""
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _tool_result(block: dict[str, Any], param: str, images: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``tool_result`` block as a ``tool`` message; its images are collected into ``images`` (a tool message
    carries text only: they follow in the user message after the results)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"Missing required parameter: '{param}.tool_use_id'.", param)
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        texts = []
        for j, inner in enumerate(content):
            kind = inner.get("type") if isinstance(inner, dict) else None
            if kind == "text" and isinstance(inner, dict):
                texts.append(_text(inner, f"{param}.content[{j}]"))
            elif kind == "image" and isinstance(inner, dict):
                images.append(_image(inner, f"{param}.content[{j}]"))
            else:
                raise _invalid(f"{param}.content[{j}] is a {kind!r} block; tool results take text and image blocks.")
        text = "\n".join(texts)
    else:
        raise _invalid(f"Invalid value for '{param}.content': expected a string or a list of blocks.", param)
    if block.get("is_error"):
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _user(content: list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    """A user turn's blocks: ``tool`` messages for its tool results, then one user message for the rest."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind, where = block.get("type"), f"{param}[{i}]"
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, where)})
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind == "tool_result":
            results.append(_tool_result(block, where, parts))
        elif kind not in _HISTORY_ONLY:
            raise _invalid(f"{where} is a {kind!r} block, which this gateway does not support in a user turn.")
    return results + ([{"role": "user", "content": _content(parts)}] if parts else [])


def _assistant(content: list[dict[str, Any]], param: str) -> dict[str, Any]:
    """An assistant turn's blocks: its text, and ``tool_use`` blocks as ``tool_calls`` (ids kept)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind, where = block.get("type"), f"{param}[{i}]"
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(call_id, str) or not isinstance(name, str) or not call_id or not name:
                raise _invalid(f"{where} needs an 'id' and a 'name'.", where)
            function = {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
            calls.append({"id": call_id, "type": "function", "function": function})
        elif kind not in _HISTORY_ONLY:
            raise _invalid(f"{where} is a {kind!r} block, which this gateway does not support in an assistant turn.")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(request: _Prompt) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if (system := _system(request.system)) is not None:
        out.append({"role": "system", "content": system})
    for i, message in enumerate(request.messages):
        content = message.content
        if not content and isinstance(content, list):
            raise _invalid(f"messages[{i}].content is empty; every message needs content.", f"messages[{i}].content")
        if isinstance(content, str):
            out.append({"role": message.role, "content": content})
        elif message.role == "user":
            out.extend(_user(content, f"messages[{i}].content"))
        else:
            out.append(_assistant(content, f"messages[{i}].content"))
    return out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        kind, name = tool.get("type"), tool.get("name")
        if kind not in (None, "custom"):
            raise _invalid(
                f"tools[{i}] is of type {kind!r}: a server tool, which this gateway does not run. Only custom tools "
                "(name, description, input_schema) are supported.",
                f"tools[{i}].type",
            )
        schema = tool.get("input_schema")
        if not isinstance(name, str) or not name or not isinstance(schema, dict):
            raise _invalid(f"tools[{i}] needs a 'name' and an 'input_schema' object.", f"tools[{i}]")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(description := tool.get("description"), str):
            function["description"] = description
        if isinstance(strict := tool.get("strict"), bool):
            function["strict"] = strict
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict[str, Any], names: set[str]) -> str | dict[str, Any]:
    kind = choice.get("type")
    if isinstance(kind, str) and kind in _TOOL_CHOICES:
        return _TOOL_CHOICES[kind]
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in names:
            raise _invalid(f"tool_choice names the tool {name!r}, which is not among the request's tools.")
        return {"type": "function", "function": {"name": name}}
    raise _invalid(f"tool_choice type {kind!r} is not one of 'auto', 'any', 'tool' or 'none'.", "tool_choice.type")


def _thinking_on(thinking: dict[str, Any] | None) -> bool:
    return thinking is not None and thinking.get("type") not in (None, "disabled")


def prompt_body(request: _Prompt) -> dict[str, Any]:
    """The chat body's prompt (model, messages, tools and tool choice) for a Messages or count_tokens request."""
    body: dict[str, Any] = {"model": request.model, "messages": _messages(request)}
    tools = _tools(request.tools or [])
    choice = request.tool_choice
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = _tool_choice(choice, {t["function"]["name"] for t in tools})
            if choice.get("disable_parallel_tool_use") is True:
                body["parallel_tool_calls"] = False
    elif choice is not None and choice.get("type") in ("any", "tool"):
        raise _invalid("tool_choice asks for a tool call, but the request has no tools.", "tool_choice")
    return body


def translate(request: MessagesRequest) -> Translated:
    """The chat-completions body for ``request``; a 400 naming the field for anything that cannot be served."""
    body = prompt_body(request)
    body["max_tokens"] = request.max_tokens
    for name in ("temperature", "top_p", "top_k"):
        if (value := getattr(request, name)) is not None:
            body[name] = value
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    user = (request.metadata or {}).get("user_id")
    if isinstance(user, str) and user:
        body["user"] = user
    fmt = (request.output_config or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _invalid("output_config.format.schema must be a JSON schema object.", "output_config.format")
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    if request.stream:
        body["stream"] = True
    dropped = ["thinking"] if _thinking_on(request.thinking) else []
    return Translated(body, request.model, list(request.stop_sequences or ()), dropped)


def chat_request(body: dict[str, Any]) -> ChatCompletionRequest:
    """The translated body as the typed chat request the serving layer (and plugins) read."""
    try:
        return msgspec.convert(body, ChatCompletionRequest)
    except msgspec.ValidationError as err:  # a translation that breaks a chat limit (messages past the cap, ...)
        message, where = split_validation_error(err)
        where = where or "the top"
        raise _invalid(f"The request translates to an invalid chat request: {message} at {where}.") from None


def _chars(value: Any) -> tuple[int, int]:
    """Characters of text in a chat message's content (or a tool call), and the images in it."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, list):
        counted = [_chars(item) for item in value]
        return sum(c for c, _ in counted), sum(i for _, i in counted)
    if isinstance(value, dict):
        if value.get("type") == "image_url":
            return 0, 1
        if "function" in value:
            function = value["function"]
            return len(function.get("name", "")) + len(function.get("arguments", "")), 0
        return _chars(value.get("text"))
    return 0, 0


def estimate_tokens(body: dict[str, Any]) -> int:
    """An estimate of a chat body's prompt tokens: its text at :data:`CHARS_PER_TOKEN`, a few per message, a fixed
    count per image. Not a tokenizer's count: the deployment that answers may not even be chosen yet."""
    chars = images = 0
    messages = body["messages"]
    for message in messages:
        for value in (message.get("content"), message.get("tool_calls")):
            c, i = _chars(value)
            chars, images = chars + c, images + i
    if tools := body.get("tools"):
        chars += len(msgspec.json.encode(tools))
    return -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_IMAGE * images

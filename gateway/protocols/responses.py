"""OpenAI's Responses API, the request half: the request checked, its input items normalised (each with an id, as
they are stored) and translated onto a chat-completions body. The answer half is
:mod:`minigate.gateway.protocols.responses_out`."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from minigate.gateway.core.errors import GatewayError, InvalidRequest
from minigate.gateway.core.wire import MAX_TOKENS, ChatCompletionRequest, split_validation_error

__all__ = ["ResponsesRequest", "chat_body", "chat_request", "input_items", "new_id", "not_found"]

_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


class ResponsesRequest(msgspec.Struct, kw_only=True):
    """``POST /v1/responses``: the fields the gateway reads (unknown ones, ``reasoning``, ``include``,
    ``prompt_cache_key`` and the like, are accepted and ignored)."""

    model: Annotated[str, Meta(min_length=1, max_length=256)]
    input: str | list[Any] | None = None
    instructions: str | None = None
    previous_response_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, Meta(ge=1, le=MAX_TOKENS)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    text: dict[str, Any] | None = None
    metadata: Annotated[dict[str, str], Meta(max_length=16)] | None = None
    user: str | None = None
    store: bool | None = None
    stream: bool | None = None
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None

    def __post_init__(self) -> None:
        """Refuse what cannot be served by a translation onto chat completions, naming the field."""
        if self.background:
            raise _invalid("Background responses are not supported by this gateway.", "background")
        for name in ("conversation", "prompt"):
            if getattr(self, name) is not None:
                raise _invalid(f"'{name}' is not supported by this gateway; send the input itself.", name)


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's style, ``<prefix>_`` and 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


def not_found(response_id: str, param: str | None = None) -> GatewayError:
    """404 for a response id the key has no response of (unknown, deleted, someone else's or not stored)."""
    code = "previous_response_not_found" if param else "not_found"
    prefix = "Previous response" if param else "Response"
    return GatewayError(f"{prefix} with id {response_id!r} not found.", status=404, param=param, code=code)


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _text_of(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"Invalid value for '{param}': expected a string.", param)
    return value


def _part(part: Any, role: str, param: str) -> dict[str, Any]:
    """One content part, checked; ``input_image`` keeps its fields, text parts keep theirs."""
    if not isinstance(part, dict):
        raise _invalid(f"Invalid value for '{param}': expected an object.", param)
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        _text_of(part.get("text"), f"{param}.text")
        return part
    if kind == "refusal" and role == "assistant":
        _text_of(part.get("refusal"), f"{param}.refusal")
        return part
    if kind == "input_image" and role != "assistant":
        if not isinstance(part.get("image_url"), str):
            raise _invalid(
                "Only images given by 'image_url' (a URL or a data: URL) are supported; file ids are not.",
                f"{param}.image_url",
            )
        return part
    raise _invalid(f"Content part type {kind!r} is not supported here.", f"{param}.type", "unsupported_value")


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise _invalid(
            f"Invalid value for '{param}.role': expected one of user, assistant, system, developer.", f"{param}.role"
        )
    content = item.get("content")
    parts: list[dict[str, Any]]
    if isinstance(content, str):
        parts = [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
        if role == "assistant":
            parts[0]["annotations"] = []
    elif isinstance(content, list):
        parts = [_part(part, role, f"{param}.content[{i}]") for i, part in enumerate(content)]
    else:
        raise _invalid(
            f"Invalid value for '{param}.content': expected a string or a list of parts.", f"{param}.content"
        )
    return {"type": "message", "role": role, "content": parts, "status": item.get("status") or "completed"}


def _function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = _text_of(item.get("call_id"), f"{param}.call_id")
    name = _text_of(item.get("name"), f"{param}.name")
    arguments = _text_of(item.get("arguments"), f"{param}.arguments")
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, "status": "completed"}


def _function_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = _text_of(item.get("call_id"), f"{param}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        for i, part in enumerate(output):
            if not (isinstance(part, dict) and part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str)):
                raise _invalid(
                    "A function call's output may hold only text parts here.",
                    f"{param}.output[{i}]",
                    "unsupported_value",
                )
    elif not isinstance(output, str):
        raise _invalid(f"Invalid value for '{param}.output': expected a string or a list of parts.", f"{param}.output")
    return {"type": "function_call_output", "call_id": call_id, "output": output, "status": "completed"}


def input_items(value: str | list[Any] | None) -> list[dict[str, Any]]:
    """The request's ``input`` as items in their full form, each with an id (as they are stored and listed)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    items = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _invalid(f"Invalid value for '{param}': expected an object.", param)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            out = _message(item, param)
        elif kind == "function_call":
            out = _function_call(item, param)
        elif kind == "function_call_output":
            out = _function_output(item, param)
        elif kind == "reasoning":  # what a model thought earlier: nothing to send to a chat upstream
            out = {k: v for k, v in item.items() if k != "id"}
        else:
            raise _invalid(
                f"Input item type {kind!r} is not supported by this gateway.", f"{param}.type", "unsupported_value"
            )
        given = item.get("id")
        out["id"] = given if isinstance(given, str) and given else new_id(_ID_PREFIXES[kind])
        items.append(out)
    return items


def _chat_content(parts: list[dict[str, Any]], role: str) -> str | list[dict[str, Any]]:
    """A message's parts as chat content: a string when it is one text, else chat parts."""
    texts = [part.get("text") if part["type"] != "refusal" else part.get("refusal") for part in parts]
    if role == "assistant" or all(part["type"] != "input_image" for part in parts):
        if len(parts) == 1 or role == "assistant":
            return "".join(text or "" for text in texts)
        return [{"type": "text", "text": text} for text in texts]
    chat: list[dict[str, Any]] = []
    for part, text in zip(parts, texts, strict=True):
        if part["type"] == "input_image":
            image = {"url": part["image_url"]}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            chat.append({"type": "image_url", "image_url": image})
        else:
            chat.append({"type": "text", "text": text})
    return chat


def _messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        kind = item["type"]
        if kind == "message":
            role = _ROLES[item["role"]]
            messages.append({"role": role, "content": _chat_content(item["content"], role)})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function", "function": {"name": item["name"]}}
            call["function"]["arguments"] = item["arguments"]
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # calls made in the same turn: one message
                last.setdefault("tool_calls", []).append(call)
                if last["content"] == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else "".join(part["text"] for part in output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
    return messages


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    chat = []
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _invalid(f"Invalid value for '{param}': expected an object.", param)
        kind = tool.get("type")
        if kind != "function":
            raise _invalid(
                f"Tool type {kind!r} is not supported by this gateway: only 'function' tools are (hosted tools such "
                "as web search, file search or computer use are not).",
                f"{param}.type",
                "unsupported_value",
            )
        function: dict[str, Any] = {"name": _text_of(tool.get("name"), f"{param}.name")}
        for field, kind_of in (("description", str), ("parameters", dict), ("strict", bool)):
            value = tool.get(field)
            if value is None:
                continue
            if not isinstance(value, kind_of):
                raise _invalid(
                    f"Invalid value for '{param}.{field}': expected a {kind_of.__name__}.", f"{param}.{field}"
                )
            function[field] = value
        chat.append({"type": "function", "function": function})
    return chat


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise _invalid(
                "Invalid value for 'tool_choice': expected auto, none, required or a function.", "tool_choice"
            )
        return choice
    if choice.get("type") != "function":
        raise _invalid(
            f"tool_choice of type {choice.get('type')!r} is not supported by this gateway: only functions are.",
            "tool_choice.type",
            "unsupported_value",
        )
    return {"type": "function", "function": {"name": _text_of(choice.get("name"), "tool_choice.name")}}


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _invalid("Invalid value for 'text.format': expected an object.", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise _invalid(f"text.format of type {kind!r} is not supported.", "text.format.type", "unsupported_value")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _invalid("Invalid value for 'text.format.schema': expected an object.", "text.format.schema")
    spec: dict[str, Any] = {"name": _text_of(fmt.get("name"), "text.format.name"), "schema": schema}
    for field, kind_of in (("strict", bool), ("description", str)):
        if isinstance(fmt.get(field), kind_of):
            spec[field] = fmt[field]
    return {"type": "json_schema", "json_schema": spec}


def chat_body(request: ResponsesRequest, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions body for ``request`` whose whole input (history first) is ``items``."""
    body: dict[str, Any] = {"model": request.model, "messages": _messages(request.instructions, items)}
    if request.stream:
        body["stream"] = True
    tools = _tools(request.tools or [])
    choice = None if request.tool_choice is None else _tool_choice(request.tool_choice)
    if tools:  # chat upstreams refuse tool_choice and parallel_tool_calls without tools
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    for field in ("temperature", "top_p", "user"):
        if (value := getattr(request, field)) is not None:
            body[field] = value
    if request.text is not None and (response_format := _response_format(request.text)) is not None:
        body["response_format"] = response_format
    # ``metadata`` stays here: it is echoed in the response, and chat upstreams refuse it without ``store``.
    return body


def chat_request(body: dict[str, Any]) -> ChatCompletionRequest:
    """The chat body checked as ``/v1/chat/completions`` checks its own (the plugins' request hook reads it)."""
    try:
        return msgspec.convert(body, ChatCompletionRequest)
    except msgspec.ValidationError as err:
        message, where = split_validation_error(err)
        at = f" (at {where.lstrip('.')})" if where.lstrip(".") else ""
        raise InvalidRequest(f"The input does not make a valid chat request{at}: {message.replace('`', '')}.") from None

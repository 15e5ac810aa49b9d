"""A chat-completions body as an Anthropic Messages request: what the ``anthropic`` provider sends upstream.

Pure translation, a dict in and a dict out; what the Messages API cannot express is refused with a
:class:`~minigate.providers.base.ProviderError` (400) naming the field.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from minigate.gateway.core.wire import JSON_DECODE_ERRORS
from minigate.providers.base import ProviderError

__all__ = ["DEFAULT_MAX_TOKENS", "IMAGE_TYPES", "messages_request", "tool_id"]

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; this is sent when the client gave none
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TEXT_PARTS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def _unsupported(message: str, param: str) -> ProviderError:
    """A feature the Messages API lacks: another deployment may have it (a capability refusal)."""
    return ProviderError(
        message,
        status=400,
        type="invalid_request_error",
        code="unsupported_parameter",
        param=param,
        fallback=True,
        cooldown=False,
        capability=True,
    )


def _invalid(message: str, param: str) -> ProviderError:
    """A request no deployment could serve: the client's own error."""
    return ProviderError(
        message, status=400, type="invalid_request_error", code="invalid_request", param=param, fallback=False
    )


def tool_id(ident: str) -> str:
    """A tool call id as Anthropic accepts it (letters, digits, ``_``, ``-``); the same id maps the same way, so a
    ``tool_use`` and the ``tool_result`` answering it still match."""
    return _ID_CHARS.sub("_", ident) or "_"


def _image(value: Any, where: str) -> dict[str, Any]:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise _invalid(f"{where}.image_url.url must be a URL", f"{where}.image_url")
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media, _, encoding = header.partition(";")
        if not comma or encoding != "base64":
            raise _invalid(f"{where}.image_url.url: a data URL must be base64 (data:image/png;base64,...)", where)
        if media not in IMAGE_TYPES:
            raise _unsupported(f"{where}: image type {media!r} is not supported (jpeg, png, gif, webp)", where)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _invalid(f"{where}.image_url.url must be an http(s) or a base64 data URL", f"{where}.image_url")


def _blocks(content: Any, where: str, *, images: bool) -> list[dict[str, Any]]:
    """A message's ``content`` (text, or a list of parts) as Anthropic content blocks; empty text is left out."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(f"{where}.content must be text or a list of parts", f"{where}.content")
    blocks = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str):
            raise _invalid(f"{here} must be an object with a type", here)
        if kind in _TEXT_PARTS:
            text = part.get(_TEXT_PARTS[kind])
            if not isinstance(text, str):
                raise _invalid(f"{here}.{_TEXT_PARTS[kind]} must be text", here)
            if not text:
                continue
            block: dict[str, Any] = {"type": "text", "text": text}
        elif kind == "image_url" and images:
            block = _image(part.get("image_url"), here)
        else:
            raise _unsupported(f"{here}: content parts of type {kind!r} are not supported here", here)
        if isinstance(part.get("cache_control"), dict):  # a prompt-caching hint, as some clients send it
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _arguments(arguments: Any, where: str) -> Any:
    if arguments is None or arguments == "":
        return {}
    value = arguments
    if isinstance(arguments, str):
        try:
            value = msgspec.json.decode(arguments)
        except JSON_DECODE_ERRORS:
            value = None
    if not isinstance(value, dict):
        raise _invalid(f"{where}.function.arguments must be a JSON object (Anthropic's tool input)", where)
    return value


def _assistant(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _blocks(message.get("content"), where, images=False)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _invalid(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    for k, call in enumerate(calls):
        here = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(function, dict):
            raise _invalid(f"{here} must be an object with a function", here)
        if call.get("type", "function") != "function":
            raise _unsupported(f"{here}: tool calls of type {call.get('type')!r} are not supported", here)
        ident, name = call.get("id"), function.get("name")
        if not isinstance(ident, str) or not isinstance(name, str):
            raise _invalid(f"{here} needs an id and a function name", here)
        arguments = _arguments(function.get("arguments"), here)
        blocks.append({"type": "tool_use", "id": tool_id(ident), "name": name, "input": arguments})
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    ident = message.get("tool_call_id")
    if not isinstance(ident, str) or not ident:
        raise _invalid(f"{where}.tool_call_id is required for a tool message", f"{where}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id(ident)}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif blocks := _blocks(content, where, images=True):
        block["content"] = blocks
    return block


def _conversation(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(system blocks, messages)``: system and developer messages hoisted, tool results sent as user turns,
    and consecutive turns of one role merged (the Messages API alternates user and assistant)."""
    if not isinstance(messages, list):
        raise _invalid("messages must be a list", "messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(message, dict):
            raise _invalid(f"{where} must be an object", where)
        if role in ("system", "developer"):
            system.extend(_blocks(message.get("content"), where, images=False))
            continue
        if role == "user":
            blocks = _blocks(message.get("content"), where, images=True)
        elif role == "assistant":
            blocks = _assistant(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        elif role == "function":
            raise _unsupported(f"{where}: the legacy 'function' role is not supported; use tools", f"{where}.role")
        else:
            raise _invalid(f"{where}.role {role!r} is not a chat role", f"{where}.role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # tool results open their user turn, before any text that came with them
        if turn["role"] == "user":
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        here = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _invalid(f"{here} must be an object", here)
        if tool.get("type") != "function":
            raise _unsupported(f"{here}: tools of type {tool.get('type')!r} are not supported", f"{here}.type")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid(f"{here}.function.name is required", f"{here}.function")
        schema = function.get("parameters")
        schema = {"type": "object", **schema} if isinstance(schema, dict) else {"type": "object", "properties": {}}
        entry: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str) and function["description"]:
            entry["description"] = function["description"]
        entry["input_schema"] = schema
        if isinstance(tool.get("cache_control"), dict):
            entry["cache_control"] = tool["cache_control"]
        out.append(entry)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if not isinstance(name, str):
            raise _invalid("tool_choice.function.name is required", "tool_choice")
        out = {"type": "tool", "name": name}
    elif isinstance(choice, dict):
        raise _unsupported(f"tool_choice of type {choice.get('type')!r} is not supported", "tool_choice")
    else:
        raise _invalid("tool_choice must be 'auto', 'none', 'required' or a named function", "tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # the upstream's own default is auto
    return out


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """Refuse what the Messages API has no equivalent for (each a capability refusal)."""
    if body.get("n") not in (None, 1):
        raise _unsupported("n > 1 is not supported by the Messages API (one answer per request)", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _unsupported("logprobs are not supported by the Messages API", "logprobs")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise _unsupported(
            f"response_format {fmt.get('type')!r} is not supported by the Messages API", "response_format"
        )
    if body.get("logit_bias"):
        raise _unsupported("logit_bias is not supported by the Messages API", "logit_bias")
    if body.get("audio") is not None or "audio" in (body.get("modalities") or ()):
        raise _unsupported("audio output is not supported by the Messages API", "audio")
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise _unsupported(f"the legacy {legacy!r} field is not supported; use tools and tool_choice", legacy)


def messages_request(
    body: dict[str, Any], model: str, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The Messages request for a chat-completions ``body`` to ``model``.

    Fields with no Messages equivalent that do not change what is asked (``seed``, penalties, ``store``,
    ``metadata``, ``service_tier``, ``reasoning_effort``) are left out; ``temperature`` above 1 is sent as 1, the
    top of Anthropic's range.
    """
    _refuse_unsupported(body)
    system, turns = _conversation(body.get("messages"))
    limit = body.get("max_completion_tokens")
    limit = body.get("max_tokens") if limit is None else limit
    out: dict[str, Any] = {"model": model, "max_tokens": default_max_tokens if limit is None else limit}
    if system:
        only_text = len(system) == 1 and "cache_control" not in system[0]
        out["system"] = system[0]["text"] if only_text else system
    out["messages"] = turns
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(temperature, 1)
    for key in ("top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out

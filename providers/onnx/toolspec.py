"""The ``tools`` and ``tool_choice`` of a chat request for a local model: checked, and the grammar that forces a call.

``required`` and a named function are enforced with guidance: a JSON schema whose answers are exactly the calls
``{"name": NAME, "arguments": {...}}`` of the offered tools (see docs in README, "Tool calls on local models").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from minigate.providers.base import ProviderError

__all__ = ["ToolPlan", "bad_request", "call_guidance", "call_schema", "check_tools"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Keywords whose values are schemas, lists of schemas, or maps of name -> schema (JSON Schema 2020-12).
_SCHEMA_KEYS = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")
_LIST_KEYS = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP_KEYS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
# Compact, predictable JSON: a small model given room for blanks may fill it with them. Keywords the grammar
# engine does not implement (uniqueItems, not...) are left out of the grammar rather than refused.
_GUIDANCE = {"whitespace_flexible": False, "lenient": True}
_NUMBER_BOUND = 1e15  # a bound the grammar engine can write as digits; past about 1.8e308 a float is Infinity
# Strings and arrays without a bound get one, so that a forced call ends even when the model loops: strings
# half the answer's max_tokens in characters (a character can be a token), within these limits.
_STRING_BOUNDS, _ITEMS_BOUND = (32, 1024), 32
_SHAPED = frozenset({"maxLength", "enum", "const", "pattern", "format"})  # strings bounded by their own shape


@dataclass(slots=True)
class ToolPlan:
    """The offered tools (OpenAI ``tools`` entries, checked), and how the model may use them.

    ``mode`` is ``auto`` (the model chooses), ``required`` (it must call one of ``names``; ``forced`` names the
    one when the client chose it) or ``none`` (the tools are not shown).
    """

    tools: list[dict[str, Any]]
    mode: str
    forced: str | None = None

    @property
    def names(self) -> list[str]:
        """The names a call may use: the forced one, or every offered tool's."""
        return [self.forced] if self.forced else [t["function"]["name"] for t in self.tools]


def bad_request(message: str, param: str, *, fallback: bool = False, code: str = "invalid_request") -> ProviderError:
    """A 400 refusal of the request; with ``fallback``, one another deployment may not refuse."""
    # What another deployment may do (fallback) is a capability refusal: the agent's policy says where it may go.
    return ProviderError(
        message,
        status=400,
        type="invalid_request_error",
        code=code,
        param=param,
        fallback=fallback,
        cooldown=False,
        capability=fallback,
    )


def _tool(tool: Any, index: int) -> dict[str, Any]:
    param = f"tools[{index}]"
    if not isinstance(tool, dict):
        raise bad_request("each tool must be an object", param)
    if tool.get("type") != "function":
        raise bad_request(
            f"tool type {tool.get('type')!r} is not supported by this model (only 'function')",
            f"{param}.type",
            fallback=True,
            code="unsupported_parameter",
        )
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request("a function tool needs function.name", f"{param}.function")
    if not _NAME.fullmatch(function["name"]):
        raise bad_request("function names are 1 to 64 letters, digits, '_', '.' or '-'", f"{param}.function.name")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise bad_request("function.parameters must be a JSON schema object", f"{param}.function.parameters")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise bad_request("function.description must be a string", f"{param}.function.description")
    out: dict[str, Any] = {"name": function["name"]}
    if description:
        out["description"] = description
    out["parameters"] = parameters or {"type": "object", "properties": {}}
    return {"type": "function", "function": out}


def check_tools(body: dict[str, Any]) -> ToolPlan | None:
    """The request's tool plan, None without tools (raises ProviderError 400 for what is malformed)."""
    raw, choice = body.get("tools"), body.get("tool_choice")
    if raw is None or raw == []:
        if choice not in (None, "none", "auto"):
            raise bad_request("tool_choice needs tools", "tool_choice")
        return None
    if not isinstance(raw, list):
        raise bad_request("tools must be a list", "tools")
    tools = [_tool(t, i) for i, t in enumerate(raw)]
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise bad_request("tool names must be unique", "tools")
    if choice is None or choice in ("auto", "none", "required"):
        return ToolPlan(tools, choice or "auto")
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise bad_request(
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    if name not in names:
        raise bad_request(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
    return ToolPlan(tools, "required", name)


def _closed(schema: Any, base: str, chars: int) -> Any:
    """A copy of ``schema`` for the grammar: objects with declared properties take no others, and local
    ``$ref``s point into the place the schema now has inside the whole grammar (``base``)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    ref = out.get("$ref")
    if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
        out["$ref"] = base + ref[1:]
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    kind = out.get("type")
    if kind == "number":  # unbounded, the grammar takes 1e999, which no client can read as a number
        out.setdefault("minimum", -_NUMBER_BOUND)
        out.setdefault("maximum", _NUMBER_BOUND)
    elif kind == "string" and not _SHAPED & out.keys() and out.get("minLength", 0) <= chars:
        out["maxLength"] = chars  # a small model can loop in a string until max_tokens cuts the call
    elif kind == "array" and "maxItems" not in out and out.get("minItems", 0) <= _ITEMS_BOUND:
        out["maxItems"] = _ITEMS_BOUND
    for key in _SCHEMA_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = _closed(out[key], base, chars)
    for key in _LIST_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [_closed(s, base, chars) for s in out[key]]
    for key in _MAP_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = {k: _closed(s, base, chars) for k, s in out[key].items()}
    return out


def call_schema(plan: ToolPlan, max_tokens: int | None = None) -> dict[str, Any]:
    """A JSON schema whose instances are exactly the calls ``{"name", "arguments"}`` the plan allows.

    Each tool's ``parameters`` are closed (objects take only their declared properties) so a small model cannot
    ramble on in extra keys, and what has no bound gets one (numbers +-1e15, strings half of ``max_tokens`` in
    characters, from 32 to 1024, arrays 32 items) so a call ends even when the model loops; every answer the
    grammar allows still validates against the tool's own schema.
    """
    by_name = {t["function"]["name"]: t["function"] for t in plan.tools}
    low, high = _STRING_BOUNDS
    chars = high if max_tokens is None else min(high, max(low, max_tokens // 2))
    options = []
    for i, name in enumerate(plan.names):
        parameters = by_name[name]["parameters"]
        options.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": name},
                    "arguments": _closed(parameters, f"#/anyOf/{i}/properties/arguments", chars),
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": options, "x-guidance": _GUIDANCE}


def call_guidance(plan: ToolPlan, max_tokens: int | None) -> list[str]:
    """The worker's guidance for a plan that requires a call."""
    return ["json_schema", json.dumps(call_schema(plan, max_tokens)), "tools"]

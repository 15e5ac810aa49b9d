"""The tools of a request for a local model: checks, refusals, and the schema of the calls it may make."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from minigate.providers.base import ProviderError
from minigate.providers.onnx.toolspec import call_schema, check_tools

pytestmark = pytest.mark.fast


def fn(name: str, parameters: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, **extra}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


ADD = fn("add", {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}})
WEATHER = fn(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
    description="Weather now",
    strict=False,
)


def refused(body: dict[str, Any]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        check_tools(body)
    assert info.value.status == 400
    return info.value


def test_plans() -> None:
    assert check_tools({}) is None
    assert check_tools({"tools": [], "tool_choice": "auto"}) is None
    plan = check_tools({"tools": [ADD, WEATHER]})
    assert plan is not None and (plan.mode, plan.forced, plan.names) == ("auto", None, ["add", "get_weather"])
    assert plan.tools[1] == {  # what the template is given: known fields only, strict dropped
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather now",
            "parameters": WEATHER["function"]["parameters"],
        },
    }
    for mode in ("none", "required"):
        plan = check_tools({"tools": [ADD], "tool_choice": mode})
        assert plan is not None and plan.mode == mode
    plan = check_tools({"tools": [ADD, WEATHER], "tool_choice": {"type": "function", "function": {"name": "add"}}})
    assert plan is not None and (plan.mode, plan.forced, plan.names) == ("required", "add", ["add"])
    plan = check_tools({"tools": [fn("ping")]})
    assert plan is not None and plan.tools[0]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_refusals() -> None:
    error = refused({"tools": [{"type": "web_search"}]})  # another deployment may do it: a capability refusal
    assert (error.code, error.param, error.fallback, error.capability) == (
        "unsupported_parameter",
        "tools[0].type",
        True,
        True,
    )
    for body, param in (
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": "add"}, "tools"),
        ({"tools": ["add"]}, "tools[0]"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [fn("has space")]}, "tools[0].function.name"),
        ({"tools": [fn("x" * 65)]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [fn("f", description=3)]}, "tools[0].function.description"),
        ({"tools": [ADD, ADD]}, "tools"),
        ({"tools": [ADD], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [ADD], "tool_choice": {"type": "function"}}, "tool_choice"),
    ):
        error = refused(body)
        assert (error.param, error.fallback, error.capability) == (param, False, False), body


def test_the_call_schema_takes_exactly_the_calls_of_the_offered_tools() -> None:
    plan = check_tools({"tools": [ADD, WEATHER, fn("ping")], "tool_choice": "required"})
    assert plan is not None
    schema = call_schema(plan)
    assert schema["x-guidance"] == {"whitespace_flexible": False, "lenient": True}
    first = schema["anyOf"][0]
    assert first["properties"]["name"] == {"const": "add"}
    # numbers without bounds get +-1e15 in the grammar: past about 1.8e308 a float is Infinity, which is no JSON
    assert first["properties"]["arguments"]["properties"]["a"] == {"type": "number", "minimum": -1e15, "maximum": 1e15}
    # strings and arrays without bounds get some, so that a model looping in one still ends its call
    weather = schema["anyOf"][1]["properties"]["arguments"]["properties"]
    assert weather["city"] == {"type": "string", "maxLength": 1024}  # no max_tokens: the most
    for max_tokens, chars in ((200, 100), (10, 32), (64000, 1024)):  # half of max_tokens, within 32 to 1024
        city = call_schema(plan, max_tokens)["anyOf"][1]["properties"]["arguments"]["properties"]["city"]
        assert city["maxLength"] == chars
    assert weather["unit"] == {"type": "string", "enum": ["celsius", "fahrenheit"]}  # bounded by its shape
    assert first["required"] == ["name", "arguments"] and first["additionalProperties"] is False
    validator = jsonschema_rs.validator_for(schema)
    assert validator.is_valid({"name": "add", "arguments": {"a": 1, "b": 2.5}})
    assert validator.is_valid({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}})
    assert validator.is_valid({"name": "ping", "arguments": {}})
    for wrong in (
        {"name": "add", "arguments": {"a": "1"}},
        {"name": "add", "arguments": {"a": 1, "c": 2}},  # closed: no properties beyond the declared ones
        {"name": "get_weather", "arguments": {"unit": "celsius"}},
        {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "kelvin"}},
        {"name": "ping", "arguments": {"x": 1}},
        {"name": "other", "arguments": {}},
        {"name": "add"},
        {"name": "add", "arguments": {}, "extra": 1},
    ):
        assert not validator.is_valid(wrong), wrong
    forced = check_tools(
        {"tools": [ADD, WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    )
    assert forced is not None
    assert [o["properties"]["name"]["const"] for o in call_schema(forced)["anyOf"]] == ["get_weather"]


def test_nested_objects_are_closed_and_local_refs_follow_the_schema_into_the_grammar() -> None:
    parameters = {
        "type": "object",
        "properties": {
            "properties": {"type": "string"},  # a parameter named like the keyword stays a parameter
            "where": {"$ref": "#/$defs/place"},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
            "free": {"type": "object"},
            "open": {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": True},
        },
        "$defs": {"place": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}},
    }
    plan = check_tools({"tools": [ADD, fn("put", parameters)], "tool_choice": "required"})
    assert plan is not None
    schema = call_schema(plan)
    arguments = schema["anyOf"][1]["properties"]["arguments"]
    assert arguments["properties"]["where"] == {"$ref": "#/anyOf/1/properties/arguments/$defs/place"}
    assert arguments["properties"]["properties"] == {"type": "string", "maxLength": 1024}
    assert arguments["$defs"]["place"]["additionalProperties"] is False
    assert arguments["properties"]["tags"]["items"]["additionalProperties"] is False
    assert arguments["properties"]["tags"]["maxItems"] == 32
    assert "additionalProperties" not in arguments["properties"]["free"]  # free-form objects stay free
    assert arguments["properties"]["open"]["additionalProperties"] is True
    assert parameters["$defs"]["place"].get("additionalProperties") is None  # the request's schema is untouched
    validator = jsonschema_rs.validator_for(schema)
    assert validator.is_valid({"name": "put", "arguments": {"where": {"lat": 1.5}, "open": {"y": 1}, "free": {"z": 1}}})
    assert not validator.is_valid({"name": "put", "arguments": {"where": {"lat": "x"}}})
    assert not validator.is_valid({"name": "put", "arguments": {"where": {"lat": 1, "lon": 2}}})

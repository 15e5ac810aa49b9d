"""Anthropic's Messages API, the request half: custom tools become chat functions, ``tool_choice`` and
``disable_parallel_tool_use`` map onto the chat fields, and server tools are refused naming their type."""

from __future__ import annotations

from typing import Any

import pytest

from tests.protocols.test_anthropic import WEATHER, chat, refused

pytestmark = pytest.mark.fast


def test_custom_tools_become_functions() -> None:
    strict = {"type": "custom", "name": "f", "input_schema": {"type": "object", "properties": {}}, "strict": True}
    body = chat(tools=[{**WEATHER, "cache_control": {"type": "ephemeral"}}, strict])
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object"},
                "description": "The weather in a city.",
            },
        },
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {}}, "strict": True},
        },
    ]
    assert "tool_choice" not in body and "parallel_tool_calls" not in body


@pytest.mark.parametrize(
    "kind",
    [
        "web_search_20250305",
        "web_fetch_20250910",
        "bash_20250124",
        "text_editor_20250124",
        "text_editor_20250728",
        "computer_20250124",
        "code_execution_20250522",
        "memory_20250818",
    ],
)
def test_server_tools_are_refused_naming_their_type(kind: str) -> None:
    error = refused(tools=[WEATHER, {"type": kind, "name": kind.split("_2")[0]}])
    assert repr(kind) in error.message and error.param == "tools[1].type"


def test_a_tool_needs_a_name_and_a_schema() -> None:
    refused(tools=[{"name": "f"}])
    refused(tools=[{"input_schema": {"type": "object"}}])
    refused(tools=[{"name": "f", "input_schema": "object"}])


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    body = chat(tools=[WEATHER], tool_choice=choice)
    assert body["tool_choice"] == expected and "parallel_tool_calls" not in body


def test_disable_parallel_tool_use() -> None:
    body = chat(tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert body["parallel_tool_calls"] is False
    assert "parallel_tool_calls" not in chat(
        tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": False}
    )


def test_tool_choice_refusals() -> None:
    assert "'nope'" in refused(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"}).message
    assert refused(tools=[WEATHER], tool_choice={"type": "sometimes"}).param == "tool_choice.type"
    assert "no tools" in refused(tool_choice={"type": "any"}).message
    refused(tool_choice={"type": "tool", "name": "get_weather"})
    assert "tool_choice" not in chat(tool_choice={"type": "auto"})  # nothing to choose from: left out
    assert "tool_choice" not in chat(tool_choice={"type": "none"})

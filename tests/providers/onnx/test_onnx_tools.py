"""Tool calls on local models, against the tiny model in real worker processes.

The tiny model's random weights never call a tool by themselves: ``required`` (a grammar) makes them, and a
``response_format`` grammar shaped like a call stands in for a model choosing to call under ``auto``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from minigate.providers.base import ProviderError
from tests.providers.onnx.helpers import TINY, chat, collect
from tests.providers.onnx.templates import QWEN_STYLE, with_template


def fn(name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, "description": f"the {name} tool"}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


WEATHER = fn(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
)
ADD = fn(
    "add", {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}
)
SEARCH = fn(
    "search",
    {
        "type": "object",
        "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 10}},
        "required": ["query"],
    },
)
TOOLS = [WEATHER, ADD, SEARCH]


def validators(tools: list[dict[str, Any]]) -> dict[str, Any]:
    return {t["function"]["name"]: jsonschema_rs.validator_for(t["function"].get("parameters") or {}) for t in tools}


def forced(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def streamed_calls(chunks: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]], str | None]:
    """Content, the calls put together from their deltas (checking their order), and the finish reason."""
    text, calls, finish = "", [], None
    for c in chunks:
        if not c["choices"]:
            continue
        choice = c["choices"][0]
        text += choice["delta"].get("content") or ""
        for delta in choice["delta"].get("tool_calls") or ():
            if delta["index"] == len(calls):  # a new call: id, type and name come first, arguments after
                assert delta["id"].startswith("call_") and delta["type"] == "function"
                calls.append({"id": delta["id"], "name": delta["function"]["name"], "arguments": ""})
            else:
                assert delta["index"] == len(calls) - 1 and set(delta) == {"index", "function"}
            calls[delta["index"]]["arguments"] += delta["function"].get("arguments", "")
        finish = choice["finish_reason"] or finish
    return text, calls, finish


def call_format(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A response_format whose answers look like a call of ``name``."""
    schema = {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        "x-guidance": {"whitespace_flexible": False},  # else random weights fill the room with blanks
    }
    return {"type": "json_schema", "json_schema": {"name": "call", "schema": schema}}


CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 8}},
    "required": ["city"],
    "additionalProperties": False,
}


async def test_required_and_named_choices_give_calls_that_validate(provider: Any) -> None:
    check = validators(TOOLS)
    # Random weights under a grammar can ramble on inside a string; with these prompts (greedy, deterministic)
    # every call closes well before max_tokens.
    for content in ("hello there", "Paris", "x"):
        for choice in ("required", forced("get_weather"), forced("add"), forced("search")):
            body = await provider.complete(chat(content, tools=TOOLS, tool_choice=choice, max_tokens=120))
            (answer,) = body["choices"]
            assert answer["finish_reason"] == "tool_calls" and answer["message"]["content"] is None
            (call,) = answer["message"]["tool_calls"]
            assert call["id"].startswith("call_") and call["type"] == "function"
            if choice != "required":
                assert call["function"]["name"] == choice["function"]["name"]  # type: ignore[index]
            assert check[call["function"]["name"]].is_valid(json.loads(call["function"]["arguments"])), call
            request = chat(content, tools=TOOLS, tool_choice=choice, max_tokens=120, stream=True)
            text, calls, finish = streamed_calls(await collect(await provider.open_stream(request)))
            assert (text, finish, len(calls)) == ("", "tool_calls", 1)
            assert (calls[0]["name"], calls[0]["arguments"]) == (
                call["function"]["name"],
                call["function"]["arguments"],
            )


async def test_auto_turns_an_answer_shaped_like_a_call_into_one(provider: Any) -> None:
    fmt = call_format("get_weather", CITY)
    body = await provider.complete(chat("hello there", tools=[WEATHER], response_format=fmt, max_tokens=80))
    (answer,) = body["choices"]
    assert answer["finish_reason"] == "tool_calls" and answer["message"]["content"] is None
    (call,) = answer["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert list(arguments) == ["city"]
    request = chat("hello there", tools=[WEATHER], tool_choice="auto", response_format=fmt, max_tokens=80, stream=True)
    text, calls, finish = streamed_calls(await collect(await provider.open_stream(request)))
    assert (text, finish) == ("", "tool_calls")
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", arguments)]


async def test_a_call_of_a_tool_not_offered_stays_text(provider: Any) -> None:
    fmt = call_format("delete_everything", CITY)
    body = await provider.complete(chat("hello there", tools=[WEATHER], response_format=fmt, max_tokens=80))
    (answer,) = body["choices"]
    assert answer["finish_reason"] == "stop" and "tool_calls" not in answer["message"]
    assert json.loads(answer["message"]["content"])["name"] == "delete_everything"
    request = chat("hello there", tools=[WEATHER], response_format=fmt, max_tokens=80, stream=True)
    text, calls, finish = streamed_calls(await collect(await provider.open_stream(request)))
    assert (text, calls, finish) == (answer["message"]["content"], [], "stop")


async def test_none_hides_the_tools_and_auto_offers_them(provider: Any) -> None:
    def prompt_tokens(body: dict[str, Any]) -> int:
        return int(body["usage"]["prompt_tokens"])

    plain = await provider.complete(chat("hello there", max_tokens=8))
    hidden = await provider.complete(chat("hello there", tools=TOOLS, tool_choice="none", max_tokens=8))
    offered = await provider.complete(chat("hello there", tools=TOOLS, max_tokens=8))
    assert prompt_tokens(hidden) == prompt_tokens(plain) < prompt_tokens(offered)  # the tools are in the prompt
    assert hidden["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    assert offered["choices"][0]["finish_reason"] == "length"  # random weights chose text
    assert isinstance(offered["choices"][0]["message"]["content"], str)
    fmt = call_format("get_weather", CITY)  # an answer shaped like a call is text when the tools are hidden
    body = await provider.complete(chat("hello there", tools=[WEATHER], tool_choice="none", response_format=fmt))
    assert "tool_calls" not in body["choices"][0]["message"]
    assert json.loads(body["choices"][0]["message"]["content"])["name"] == "get_weather"


HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny, 21 C"}]},
]
# What the worker is sent for HISTORY: arguments as an object, the result named after its call.
WORKER_HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        ],
    },
    {"role": "tool", "content": "sunny, 21 C", "tool_call_id": "call_1", "name": "get_weather"},
]


@pytest.fixture
def template_models(tiny_model_source: Path, tmp_path: Path) -> Path:
    """A models folder: the tiny model (no tool section) and a copy whose template has one (``qwen``)."""
    with_template(tiny_model_source, tmp_path, TINY, (tiny_model_source / "chat_template.jinja").read_text())
    with_template(tiny_model_source, tmp_path, "qwen", QWEN_STYLE)
    return tmp_path


async def test_tool_results_go_back_through_the_template(make_provider: Any, template_models: Path) -> None:
    import onnxruntime_genai as og

    from minigate.providers.onnx.openai_mapping import parse_request
    from minigate.providers.onnx.prompt import PromptBuilder

    job = parse_request("chat/completions", {"messages": HISTORY, "tools": [WEATHER]})
    assert job.message["messages"] == WORKER_HISTORY
    provider = await make_provider(models_dir=str(template_models))
    for model in (TINY, "qwen"):
        config = og.Config(str(template_models / model))
        config.clear_providers()
        tokenizer = og.Tokenizer(og.Model(config))
        expected = PromptBuilder(tokenizer).render(WORKER_HISTORY, [WEATHER])
        assert "<tool_response>\nsunny, 21 C\n</tool_response>" in expected
        assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in expected
        body = await provider.complete(chat(model=model, max_tokens=5, messages=HISTORY, tools=[WEATHER]))
        assert body["usage"]["prompt_tokens"] == len(tokenizer.encode(expected))
        assert body["choices"][0]["finish_reason"] == "length"


async def test_the_grammar_takes_the_schema_shapes_tools_come_in(provider: Any) -> None:
    tools = [
        fn("ping"),  # no parameters at all
        fn("empty", {"type": "object", "properties": {}}),
        fn(
            "put",
            {
                "type": "object",
                "properties": {
                    "where": {"$ref": "#/$defs/place"},
                    "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3},
                    "mode": {"anyOf": [{"const": "fast"}, {"type": "integer", "minimum": 0, "maximum": 3}]},
                    "note": {"type": ["string", "null"], "maxLength": 5},
                },
                "required": ["where", "mode"],
                "$defs": {"place": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}},
            },
        ),
        # A keyword the grammar engine does not implement is left out of the grammar, not refused: the call
        # comes, but nothing kept these items unique.
        fn("unique", {"type": "object", "properties": {"ids": {"type": "array", "uniqueItems": True, "maxItems": 2}}}),
    ]
    check = validators(tools)
    for name in ("ping", "empty", "put", "unique"):
        for content in ("hello there", "Paris"):
            body = await provider.complete(chat(content, tools=tools, tool_choice=forced(name), max_tokens=150))
            (call,) = body["choices"][0]["message"]["tool_calls"]
            assert call["function"]["name"] == name
            if name != "unique":
                assert check[name].is_valid(json.loads(call["function"]["arguments"])), call


async def test_tool_refusals(provider: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(tools=[WEATHER], tool_choice=forced("add")))
    assert (info.value.status, info.value.param, info.value.fallback) == (400, "tool_choice", False)
    broken = fn("broken", {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}})
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(tools=[broken], tool_choice="required"))
    error = info.value
    assert (error.status, error.code, error.param, error.fallback) == (400, "invalid_tools", "tools", False)
    assert error.message.startswith("tools cannot be used: ")
    body = await provider.complete(chat(max_tokens=2))  # the worker is unharmed
    assert body["usage"]["completion_tokens"] == 2


async def test_guided_requests_arriving_together_all_get_their_calls(provider: Any) -> None:
    import asyncio

    # onnxruntime-genai fails a whole batch when one guided sequence's grammar ends before the others: each
    # guided request runs in a batch of its own, so calls of different lengths do not break each other.
    choices = ("required", forced("add"), forced("search"), forced("get_weather"))
    bodies = await asyncio.gather(
        *(provider.complete(chat("hello there", tools=TOOLS, tool_choice=c, max_tokens=120)) for c in choices)
    )
    assert [len(b["choices"][0]["message"]["tool_calls"]) for b in bodies] == [1, 1, 1, 1]
    stats = await provider.loaded()[TINY].worker_stats()
    assert stats["max_batch_seen"] == 1

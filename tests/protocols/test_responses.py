"""The Responses API's request half: every field the gateway reads, translated onto a chat-completions body, and
a clear 400 (naming the field) for what it cannot serve."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from minigate.gateway.core.errors import GatewayError, InvalidRequest
from minigate.gateway.core.wire import decode_request
from minigate.gateway.protocols.responses import (
    ResponsesRequest,
    chat_body,
    chat_request,
    input_items,
    new_id,
    not_found,
)

pytestmark = pytest.mark.fast


def translate(**body: Any) -> dict[str, Any]:
    """The chat body for a Responses request body (model "m" unless given)."""
    body.setdefault("model", "m")
    parsed, _ = decode_request(msgspec.json.encode(body), ResponsesRequest)
    return chat_body(parsed, input_items(parsed.input))


def refused(**body: Any) -> InvalidRequest:
    """The 400 a Responses request body gets."""
    with pytest.raises(InvalidRequest) as caught:
        translate(**body)
    assert caught.value.status == 400 and caught.value.type == "invalid_request_error"
    return caught.value


def test_string_input_is_one_user_message() -> None:
    assert translate(input="Hello") == {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}


def test_instructions_come_first_as_a_system_message() -> None:
    messages = translate(instructions="Be brief.", input="Hi")["messages"]
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_roles_and_text_parts() -> None:
    """What agents send: the developer role (chat's system) and input_text / output_text / text parts."""
    messages = translate(
        input=[
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {"type": "message", "role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "x", "annotations": []}]},
            {"role": "assistant", "content": "plain"},
        ]
    )["messages"]
    assert messages == [
        {"role": "system", "content": "rules"},
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "x"},
        {"role": "assistant", "content": "plain"},
    ]


def test_input_image_becomes_an_image_url_part() -> None:
    content = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
    ]
    messages = translate(input=[{"role": "user", "content": content}])["messages"]
    assert messages[0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
    ]


def test_function_calls_and_outputs_become_tool_calls_and_tool_messages() -> None:
    messages = translate(
        input=[
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"type": "function_call", "call_id": "call_a", "name": "weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "call_b", "name": "weather", "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "rain"}]},
        ]
    )["messages"]
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
    ]
    assert messages == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
    ]


def test_text_then_a_call_of_one_turn_is_one_assistant_message() -> None:
    messages = translate(
        input=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ]
    )["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


def test_function_tools_are_flat_in_responses_and_nested_in_chat() -> None:
    schema = {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}
    tool = {"type": "function", "name": "exec_command", "description": "run", "parameters": schema, "strict": False}
    body = translate(input="x", tools=[tool], tool_choice="auto", parallel_tool_calls=True)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "exec_command", "description": "run", "parameters": schema, "strict": False},
        }
    ]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True


@pytest.mark.parametrize(
    ("choice", "chat"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_tool_choice(choice: Any, chat: Any) -> None:
    tools = [{"type": "function", "name": "f"}]
    assert translate(input="x", tools=tools, tool_choice=choice)["tool_choice"] == chat


def test_tool_choice_and_parallel_calls_without_tools_are_not_sent() -> None:
    """Chat upstreams refuse both when there are no tools."""
    body = translate(input="x", tool_choice="auto", parallel_tool_calls=False)
    assert "tool_choice" not in body and "parallel_tool_calls" not in body and "tools" not in body


@pytest.mark.parametrize(
    "kind",
    [
        "web_search",
        "web_search_preview",
        "file_search",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "custom",
    ],
)
def test_every_hosted_tool_type_is_refused_by_name(kind: str) -> None:
    err = refused(input="x", tools=[{"type": "function", "name": "ok"}, {"type": kind}])
    assert err.param == "tools[1].type" and repr(kind) in err.message and err.code == "unsupported_value"


def test_sampling_limits_user_and_metadata() -> None:
    body = translate(input="x", max_output_tokens=50, temperature=0.2, top_p=0.9, user="u1", metadata={"a": "b"})
    assert body["max_tokens"] == 50 and body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert body["user"] == "u1"
    assert "metadata" not in body  # echoed in the response, never sent to a chat upstream (it refuses it without store)


@pytest.mark.parametrize(
    ("fmt", "chat"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "name": "point", "schema": {"type": "object"}, "strict": True},
            {"type": "json_schema", "json_schema": {"name": "point", "schema": {"type": "object"}, "strict": True}},
        ),
    ],
)
def test_text_format_becomes_response_format(fmt: dict[str, Any], chat: Any) -> None:
    assert translate(input="x", text={"format": fmt}).get("response_format") == chat


def test_stream_is_asked_for_on_the_chat_side() -> None:
    assert translate(input="x", stream=True)["stream"] is True
    assert "stream" not in translate(input="x", stream=False)


def test_what_agents_send_on_every_request_is_accepted() -> None:
    body = translate(
        input=[{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "d"}]}],
        store=False,
        stream=True,
        reasoning={"summary": "auto"},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="abc",
        client_metadata={"x": 1},
        truncation="auto",
        service_tier="auto",
        safety_identifier="s",
        background=False,
        some_future_field={"anything": [1, 2]},
    )
    assert body == {"model": "m", "messages": [{"role": "system", "content": "d"}], "stream": True}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "top_p": "high"}, "top_p"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "tools": "all"}, "tools"),
        ({"input": "x", "metadata": {"a": 1}}, "metadata[...]"),
        ({"input": "x", "store": "yes"}, "store"),
        ({"input": "x", "instructions": ["a"]}, "instructions"),
        ({"input": "x", "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"input": ["x"]}, "input[0]"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].image_url",
        ),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}, "input[0].arguments"),
        ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}]},
            "input[0].output[0]",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type"),
        ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": "{}"}]}, "tools[0].parameters"),
        ({"input": "x", "tools": [{"type": "function", "name": "f", "strict": "no"}]}, "tools[0].strict"),
        ({"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": "always"}, "tool_choice"),
        (
            {"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "web_search"}},
            "tool_choice.type",
        ),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": "x", "previous_response_id": ""}, "previous_response_id"),
    ],
)
def test_bad_values_are_a_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    assert refused(**body).param == param


def test_model_is_required() -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(b'{"input": "x"}', ResponsesRequest)
    assert caught.value.param == "model"


def test_input_items_get_ids_and_their_full_form() -> None:
    items = input_items(
        [
            {"role": "user", "content": "hi"},
            {"id": "msg_kept", "role": "assistant", "content": "yo"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
        ]
    )
    assert [item["id"][: item["id"].index("_")] for item in items] == ["msg", "msg", "fc", "fco"]
    assert items[1]["id"] == "msg_kept"
    assert items[0] == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "hi"}],
        "status": "completed",
        "id": items[0]["id"],
    }
    assert items[1]["content"] == [{"type": "output_text", "text": "yo", "annotations": []}]
    assert input_items("hi")[0]["content"] == [{"type": "input_text", "text": "hi"}]


def test_stored_items_translate_as_the_originals_do() -> None:
    """History read back from the database (items in their full form) makes the same chat messages."""
    original = [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"},
    ]
    parsed = ResponsesRequest(model="m")
    stored = input_items(original)
    assert chat_body(parsed, input_items(stored)) == chat_body(parsed, stored) == translate(input=original)


def test_chat_request_checks_the_translation() -> None:
    assert chat_request(translate(input="hi")).messages[0].content == "hi"
    with pytest.raises(InvalidRequest) as caught:
        chat_request({"model": "m", "messages": []})
    assert "valid chat request" in caught.value.message


def test_ids_and_not_found() -> None:
    assert new_id("resp").startswith("resp_") and len(new_id("resp")) == 53 and new_id("x") != new_id("x")
    err = not_found("resp_x")
    assert isinstance(err, GatewayError) and err.status == 404 and err.code == "not_found"
    previous = not_found("resp_x", "previous_response_id")
    assert previous.param == "previous_response_id" and "resp_x" in previous.message

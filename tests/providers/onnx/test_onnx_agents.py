"""Agents' protocols against the real default local model through the running gateway: the Responses API with
the openai SDK and the Messages API with the anthropic SDK, each with a tool round trip."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.providers.onnx.test_onnx_gateway import local_config
from tests.providers.onnx.test_onnx_tools import WEATHER, validators

MODEL = "local/smollm2-135m-instruct"
PARAMETERS = WEATHER["function"]["parameters"]
DESCRIPTION = "The weather in a city"
RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": DESCRIPTION,
    "parameters": PARAMETERS,
}
MESSAGES_TOOL = {"name": "get_weather", "description": DESCRIPTION, "input_schema": PARAMETERS}


@pytest.fixture
def gateway(gateway_factory: Callable[..., GatewayServer], default_models_dir: Path) -> GatewayServer:
    config = local_config(default_models_dir, MODEL)
    config["models"]["providers"]["local"]["max_context"] = 2048
    config["models"]["aliases"] = {"claude-sonnet-4-5": "default"}  # an agent's own model name
    return gateway_factory(config)


def test_responses_api_text_stream_and_a_tool_round_trip(gateway: GatewayServer) -> None:
    client = gateway.client()
    first = client.responses.create(model="default", input="What is the capital of France?", temperature=0)
    assert "Paris" in first.output_text and first.usage is not None and first.usage.output_tokens > 0
    events = list(client.responses.create(model="default", input="Say hello.", max_output_tokens=16, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds and kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    asked = client.responses.create(
        model="default", input="What is the weather in Paris?", tools=[RESPONSES_TOOL], tool_choice="required"
    )
    (call,) = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather" and validators([WEATHER])["get_weather"].is_valid(json.loads(call.arguments))
    result = {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 18})}
    answer = client.responses.create(
        model="default", previous_response_id=asked.id, input=[result], tools=[RESPONSES_TOOL], max_output_tokens=40
    )
    assert answer.status in ("completed", "incomplete") and answer.previous_response_id == asked.id
    items = [i.type for i in client.responses.input_items.list(answer.id)]
    assert items.count("function_call") == 1 and items.count("function_call_output") == 1


def test_messages_api_text_stream_and_a_tool_round_trip(gateway: GatewayServer) -> None:
    client = anthropic.Anthropic(base_url=gateway.url.removesuffix("/v1"), api_key=ADMIN_KEY, max_retries=0)
    question: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=8000, messages=question, extra_body={"temperature": 0}
    )
    message = raw.parse()
    assert message.content[0].type == "text" and "Paris" in message.content[0].text
    assert raw.headers["x-minigate-model"] == "smollm2-135m-instruct"
    assert int(raw.headers["x-minigate-max-tokens-clamped"]) < 2048  # an agent's max_tokens meets a small context
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64000, messages=question) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens > 0
    asked = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        tools=[MESSAGES_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "What is the weather in Rome?"}],
    )
    (use,) = [block for block in asked.content if block.type == "tool_use"]
    assert asked.stop_reason == "tool_use" and validators([WEATHER])["get_weather"].is_valid(use.input)
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "22 C and sunny"}
    answer = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        tools=[MESSAGES_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "What is the weather in Rome?"},
            {"role": "assistant", "content": asked.content},  # type: ignore[typeddict-item]
            {"role": "user", "content": [result]},  # type: ignore[list-item]
        ],
    )
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use") and answer.usage.input_tokens > 0

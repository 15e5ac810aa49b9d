"""Tool calls and the max_tokens clamp of a local model through the running gateway, with the openai SDK."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gateway_server import GatewayServer
from tests.providers.onnx.helpers import TINY
from tests.providers.onnx.test_onnx_gateway import local_config
from tests.providers.onnx.test_onnx_tools import TOOLS, validators


@pytest.fixture
def tiny_dir(tiny_model_source: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(tiny_model_source, folder / TINY)
    return folder


def test_tool_calls_and_the_clamp_header_through_the_gateway(
    gateway_factory: Callable[..., GatewayServer], tiny_dir: Path
) -> None:
    config = local_config(tiny_dir, f"local/{TINY}")
    config["models"]["providers"]["local"]["max_context"] = 1024
    gateway = gateway_factory(config)
    client = gateway.client()
    messages = [{"role": "user", "content": "hello there"}]
    check = validators(TOOLS)
    raw = client.chat.completions.with_raw_response.create(
        model="default",
        messages=messages,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=64000,  # type: ignore[arg-type]
    )
    answer = raw.parse()
    prompt_tokens = answer.usage.prompt_tokens if answer.usage else 0
    assert raw.headers["x-minigate-max-tokens-clamped"] == str(1024 - prompt_tokens)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert check[call.function.name].is_valid(json.loads(call.function.arguments))  # type: ignore[union-attr]
    raw_stream = client.chat.completions.with_raw_response.create(
        model="default",
        messages=messages,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=64000,
        stream=True,  # type: ignore[arg-type]
    )
    assert raw_stream.headers["x-minigate-max-tokens-clamped"] == str(1024 - prompt_tokens)
    chunks = list(raw_stream.parse())
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == call.function.name  # type: ignore[union-attr]
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert arguments == call.function.arguments  # type: ignore[union-attr]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # What fits is neither clamped nor noted; a prompt that does not fit is a context-length error.
    raw = client.chat.completions.with_raw_response.create(model="default", messages=messages, max_tokens=5)
    assert "x-minigate-max-tokens-clamped" not in raw.headers
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "word " * 1200}], max_tokens=64000
        )
    assert "maximum context length is 1024 tokens" in str(info.value)

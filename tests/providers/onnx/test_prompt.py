"""Prompts with tools: the template's own tool section where it has one, the documented fallback where not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from minigate.providers.onnx.prompt import TOOLS_SECTION, PromptBuilder, fallback_messages
from tests.providers.onnx.templates import NO_SYSTEM, QWEN_STYLE, with_template

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
    {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "name": "get_weather"},
    {"role": "tool", "content": "windy", "tool_call_id": "call_2", "name": "get_weather"},
]
SECTION = TOOLS_SECTION.format(tools=json.dumps(WEATHER))
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.fast
def test_fallback_writes_tools_calls_and_results_as_text() -> None:
    assert fallback_messages(HISTORY, [WEATHER]) == [
        {"role": "system", "content": f"Be brief.\n\n{SECTION}"},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": f"{CALL_TEXT}\n{CALL_TEXT}"},
        {
            "role": "user",
            "content": "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nwindy\n</tool_response>",
        },
    ]
    assert SECTION.startswith("# Tools\n") and '{"name": <function-name>, "arguments": <args-json-object>}' in SECTION
    said = {"role": "assistant", "content": "Checking.", "tool_calls": [{"function": {"name": "f", "arguments": "x"}}]}
    assert fallback_messages([{"role": "user", "content": "hi"}, said], [WEATHER]) == [
        {"role": "system", "content": SECTION},  # no system turn: one of its own
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": 'Checking.\n<tool_call>\n{"name": "f", "arguments": "x"}\n</tool_call>'},
    ]
    assert fallback_messages(HISTORY[1:], None)[0] == {"role": "user", "content": "Weather in Paris and Oslo?"}


def _tokenizer(folder: Path) -> Any:
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.clear_providers()
    return og.Tokenizer(og.Model(config))


@pytest.fixture(scope="module")
def tokenizers(tiny_model_source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("templates")
    return {
        "chatml": _tokenizer(tiny_model_source),
        "qwen": _tokenizer(with_template(tiny_model_source, root, "qwen", QWEN_STYLE)),
        "no_system": _tokenizer(with_template(tiny_model_source, root, "no-system", NO_SYSTEM)),
    }


def test_a_template_without_a_tool_section_gets_the_fallback(tokenizers: dict[str, Any]) -> None:
    builder = PromptBuilder(tokenizers["chatml"])
    assert builder.native_tools is False
    assert builder.render(HISTORY, [WEATHER]) == (
        f"<|im_start|>system\nBe brief.\n\n{SECTION}<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris and Oslo?<|im_end|>\n"
        f"<|im_start|>assistant\n{CALL_TEXT}\n{CALL_TEXT}<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nwindy\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    plain = [{"role": "user", "content": "hi"}]
    expected = tokenizers["chatml"].apply_chat_template(json.dumps(plain), add_generation_prompt=True)
    assert builder.render(plain) == expected == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # tool_choice "none": no tools, but the history's calls and results are still written out
    assert CALL_TEXT in builder.render(HISTORY) and "# Tools" not in builder.render(HISTORY)


def test_a_template_with_a_tool_section_gets_tools_calls_and_results_as_they_are(tokenizers: dict[str, Any]) -> None:
    builder = PromptBuilder(tokenizers["qwen"])
    assert builder.native_tools is True
    prompt = builder.render(HISTORY, [WEATHER])
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert f"<tools>\n{json.dumps(WEATHER)}\n</tools>" in prompt
    assert "<|im_start|>assistant\n" + CALL_TEXT + "\n" + CALL_TEXT + "<|im_end|>" in prompt
    assert "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nwindy\n</tool_response>" in (
        prompt
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "# Tools" not in builder.render(HISTORY)  # tool_choice "none": the template is not given the tools


def test_a_template_refusing_a_system_turn_gets_the_tools_in_the_first_user_turn(tokenizers: dict[str, Any]) -> None:
    builder = PromptBuilder(tokenizers["no_system"])
    prompt = builder.render(HISTORY[1:], [WEATHER])
    assert prompt.startswith(f"<|im_start|>user\n{SECTION}\n\nWeather in Paris and Oslo?<|im_end|>\n")
    with pytest.raises(RuntimeError, match="System role not supported"):  # the client's own system turn
        builder.render(HISTORY, [WEATHER])

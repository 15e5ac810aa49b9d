"""Tool calls found in model output, in every format, whole and streamed in pieces cut anywhere."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from minigate.providers.onnx.toolcalls import ToolCall, ToolCallParser, parse_tool_calls

pytestmark = pytest.mark.fast

NAMES = ["get_weather", "add"]
PARIS = {"city": "Paris"}

# (output, text outside the calls, [(name, arguments)])
CASES: list[tuple[str, str, list[tuple[str, dict[str, object]]]]] = [
    ("Hello there", "Hello there", []),
    (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        [("get_weather", PARIS)],
    ),
    (  # Hermes/Qwen: text first, several calls, arguments given as a JSON string
        'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}</tool_call>',
        "Let me check.\n\n",
        [("get_weather", PARIS), ("add", {"a": 1, "b": 2})],
    ),
    ('<tool_call>{"name": "get_weather"}</tool_call>', "", [("get_weather", {})]),  # no arguments in a block: {}
    ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [("get_weather", PARIS)]),
    ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [("get_weather", PARIS)]),  # Llama 3 JSON
    ('  {"name": "add", "arguments": {"a": 1, "b": 2}}', "", [("add", {"a": 1, "b": 2})]),
    (
        '[{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "get_weather", "arguments": {"city": "Paris"}}]',
        "",
        [("add", {"a": 1, "b": 2}), ("get_weather", PARIS)],
    ),
    ('[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1, "b": 2}}]', "", [("add", {"a": 1, "b": 2})]),
    ('```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```', "", [("add", {"a": 1, "b": 2})]),
    (
        '{"name": "add", "parameters": {"a": 1}}; {"name": "add", "parameters": {"a": 2}}',
        "",
        [("add", {"a": 1}), ("add", {"a": 2})],
    ),
    ('{"name": "add", "arguments": {"a": 1}}\nDone.', "Done.", [("add", {"a": 1})]),
    ('<tool_call>{"name": "add", "arguments": {"a": 1}}', "", [("add", {"a": 1})]),  # unclosed at the end: tried
    ('{"name": "get_weather", "arguments": {"city": "Zürich"}}', "", [("get_weather", {"city": "Zürich"})]),
    # Not calls: unknown names, JSON that is no call, prose, code, cut-off calls.
    ('{"name": "delete_everything", "arguments": {}}', '{"name": "delete_everything", "arguments": {}}', []),
    (
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call> ok',
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call> ok',
        [],
    ),
    ('[{"name": "add", "arguments": {}}, {"name": "nope", "arguments": {}}]', None, []),
    ('{"name": "add"}', '{"name": "add"}', []),  # bare JSON needs its arguments to count as a call
    ('{"name": "add", "arguments": [1, 2]}', '{"name": "add", "arguments": [1, 2]}', []),
    ('{"a": 1} and more', '{"a": 1} and more', []),
    ("[1] first point", "[1] first point", []),
    ("```python\nprint(1)\n```", "```python\nprint(1)\n```", []),
    ('<tool_call>{"name": "add", "arguments": {"a": 1', '<tool_call>{"name": "add", "arguments": {"a": 1', []),
    ('{"name": "add", "arguments": {"a": 1', '{"name": "add", "arguments": {"a": 1', []),
    ("a < b and <tool_c", "a < b and <tool_c", []),
    ("", "", []),
    ("  \n", "  \n", []),
]


def _pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _streamed(text: str, cuts: list[int]) -> tuple[str, list[ToolCall], list[str | ToolCall]]:
    parser = ToolCallParser(NAMES)
    out: list[str | ToolCall] = []
    for piece in _pieces(text, cuts):
        out += parser.feed(piece)
    out += parser.finish()
    assert [item for item in out if isinstance(item, ToolCall)] == parser.calls
    return "".join(item for item in out if isinstance(item, str)), parser.calls, out


def _calls(calls: list[ToolCall]) -> list[tuple[str, object]]:
    return [(call.name, json.loads(call.arguments)) for call in calls]


@pytest.mark.parametrize(("output", "text", "calls"), CASES)
def test_whole_output(output: str, text: str | None, calls: list[tuple[str, object]]) -> None:
    found_text, found = parse_tool_calls(output, NAMES)
    assert found_text == (output if text is None else text)
    assert _calls(found) == calls


@pytest.mark.parametrize(("output", "text", "calls"), CASES)
def test_streamed_output_cut_anywhere_gives_the_same(
    output: str, text: str | None, calls: list[tuple[str, object]]
) -> None:
    expected = (output if text is None else text, calls)
    rng = random.Random(output)
    cut_sets = [list(range(1, len(output)))]  # one character at a time
    cut_sets += [[i] for i in range(1, len(output))]  # every single cut
    if len(output) > 1:
        cut_sets += [rng.sample(range(1, len(output)), min(len(output) - 1, rng.randint(1, 6))) for _ in range(30)]
    for cuts in cut_sets:
        found_text, found, _ = _streamed(output, cuts)
        assert (found_text, _calls(found)) == expected, cuts


def test_text_is_held_back_only_while_it_may_still_be_a_call() -> None:
    parser = ToolCallParser(NAMES)
    assert parser.feed("The weather") == ["The weather"]  # prose streams on at once
    assert parser.feed(" is <tool") == [" is "]  # the tail may open a call
    assert parser.feed("tip>") == ["<tooltip>"]
    assert parser.feed("<tool_call>") == []
    assert parser.feed('{"name": "add", "arguments": {}}') == []
    items = parser.feed("</tool_call>!")
    assert isinstance(items[0], ToolCall) and items[1:] == ["!"]
    parser = ToolCallParser(NAMES)
    assert parser.feed("  ") == []  # blanks first: nothing decided yet
    assert parser.feed('{"a": ') == []  # may be a call
    assert parser.feed("1} ok") == ['  {"a": 1} ok']  # its first value is no call: released
    assert parser.feed(" more") == [" more"]
    parser = ToolCallParser(NAMES)
    assert parser.feed('{"name": "add", "arguments": {"a": 1}}') == []  # a call: held, more may follow
    items = parser.finish()
    assert len(items) == 1 and isinstance(items[0], ToolCall)
    parser = ToolCallParser(NAMES)
    assert parser.feed("```") == [] and parser.feed("python\n") == ["```python\n"]


def test_calls_as_message_entries_and_stream_deltas() -> None:
    _, (call,) = parse_tool_calls('<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>', NAMES)
    assert call.id.startswith("call_") and len(call.id) == 29
    assert call.message() == {"id": call.id, "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    first, second = call.deltas(3)
    assert first == {"index": 3, "id": call.id, "type": "function", "function": {"name": "add", "arguments": ""}}
    assert second == {"index": 3, "function": {"arguments": '{"a": 1}'}}
    _, again = parse_tool_calls('{"name": "add", "arguments": {"a": 1}}', NAMES)
    assert again[0].id != call.id


def test_numbers_no_client_can_read_make_no_call() -> None:
    for arguments in ('{"a": 1e999}', '{"a": NaN}', '{"a": -Infinity}', '"{\\"a\\": 1e999}"'):
        output = f'<tool_call>{{"name": "add", "arguments": {arguments}}}</tool_call>'
        assert parse_tool_calls(output, NAMES) == (output, [])
    _, (call,) = parse_tool_calls('{"name": "add", "arguments": {"a": 9.976e+272, "b": -0.5}}', NAMES)
    assert json.loads(call.arguments) == {"a": 9.976e272, "b": -0.5}

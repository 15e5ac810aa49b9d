"""A chat request's prompt, built in the worker by the model's chat template, with the request's tools.

A template that renders ``tools`` gets them, and the history's tool calls and results, as they are. A template
that ignores them (SmolLM2's, and most small models') gets the documented fallback: the tools listed as JSON in
a system section asking for Hermes-style ``<tool_call>`` blocks, past calls written as those blocks in the
assistant's turn, and tool results as a user turn of ``<tool_response>`` blocks (as Qwen's template does).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["TOOLS_SECTION", "PromptBuilder"]

TOOLS_SECTION = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
_PROBE_MESSAGES = json.dumps([{"role": "user", "content": "x"}])
_PROBE_TOOLS = json.dumps([{"type": "function", "function": {"name": "probe", "parameters": {"type": "object"}}}])


def _call_text(call: dict[str, Any]) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):  # not a JSON object: shown as the model would have written it
        arguments = arguments or {}
    body = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def fallback_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The messages for a template without a tool section: tools, calls and results written out as text."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = "\n".join(_call_text(c) for c in message["tool_calls"])
            out.append({"role": "assistant", "content": f"{content}\n{calls}" if content else calls})
        elif role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1].get("tool_results"):  # results of one turn's calls go back as one user turn
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "tool_results": True})
        else:
            out.append({"role": role, "content": content})
    for message in out:
        message.pop("tool_results", None)
    if tools:
        section = TOOLS_SECTION.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{section}"}
        else:
            out.insert(0, {"role": "system", "content": section})
    return out


class PromptBuilder:
    """Renders chat messages (and tools) with one model's tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._native: bool | None = None

    @property
    def native_tools(self) -> bool:
        """Whether the chat template renders tools (asked once: does a tool change a probe's prompt?)."""
        if self._native is None:
            plain = self.tokenizer.apply_chat_template(_PROBE_MESSAGES, add_generation_prompt=True)
            try:
                with_tools = self.tokenizer.apply_chat_template(
                    _PROBE_MESSAGES, tools=_PROBE_TOOLS, add_generation_prompt=True
                )
            except Exception:  # a template that fails on tools has no usable tool section
                with_tools = plain
            self._native = with_tools != plain
        return self._native

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text: the template applied, with the generation prompt."""
        apply = self.tokenizer.apply_chat_template
        plain = not tools and not any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
        if plain:
            return str(apply(json.dumps(messages), add_generation_prompt=True))
        if self.native_tools:
            if tools:
                return str(apply(json.dumps(messages), tools=json.dumps(tools), add_generation_prompt=True))
            return str(apply(json.dumps(messages), add_generation_prompt=True))
        written = fallback_messages(messages, tools)
        try:
            return str(apply(json.dumps(written), add_generation_prompt=True))
        except Exception:
            if not tools or messages[0]["role"] == "system":
                raise
        # A template that refuses a system turn (Gemma's): the tools go in front of the first user turn instead.
        written = fallback_messages(messages, None)
        first = next((m for m in written if m["role"] == "user"), written[0])
        section = fallback_messages([], tools)[0]["content"]
        first["content"] = f"{section}\n\n{first['content']}"
        return str(apply(json.dumps(written), add_generation_prompt=True))

"""OpenAI request and response shapes for the local provider: body -> worker request, pieces -> chunks.

What it cannot honour is refused with a 400, never dropped: ``n`` > 1 and non-text content for good; legacy
``functions``, tools other than functions, ``logprobs``, non-zero ``presence_penalty``/``frequency_penalty``,
a non-empty ``logit_bias`` and unknown ``response_format`` types with ``fallback`` set (a remote deployment may).
Function tools are :mod:`minigate.providers.onnx.toolspec`'s.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from minigate.providers.onnx.protocol import GenRequest
from minigate.providers.onnx.toolcalls import ToolCall
from minigate.providers.onnx.toolspec import bad_request, call_guidance, check_tools

__all__ = ["ChatJob", "StopMatcher", "chunk", "parse_request", "response_body", "usage"]


@dataclass(slots=True)
class ChatJob:
    """What the worker is asked for, plus what the gateway side does itself (stop strings, chunk shape)."""

    message: GenRequest
    stop: list[str]
    include_usage: bool
    chat: bool
    tools: list[str] | None = None  # the names a call in the output may use; None: the output is all text


def _text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                parts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(
                    f"this model accepts text only, not {kind!r} content",
                    f"messages[{index}].content",
                    fallback=True,
                    code="unsupported_content",
                )
        return "".join(parts)
    raise bad_request("message content must be a string or a list of parts", f"messages[{index}].content")


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise bad_request(f"{name} must be a number from {lo} to {hi}", name)
    return float(value)


def _history_call(call: Any, param: str) -> dict[str, Any]:
    """A past tool call of an assistant turn, its arguments as an object when they are one (templates want that)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request("each tool call needs function.name", param)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except ValueError:
            decoded = None
        arguments = decoded if isinstance(decoded, dict) else arguments
    elif arguments is not None and not isinstance(arguments, dict):
        raise bad_request("tool call arguments must be a JSON string", f"{param}.function.arguments")
    ident = call.get("id")
    out = {"type": "function", "function": {"name": function["name"], "arguments": arguments or {}}}
    return {"id": ident, **out} if isinstance(ident, str) else out


def _messages(messages: Any) -> list[dict[str, Any]]:
    """The chat turns for the worker: text content, and tool calls and results kept for the template."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    out = []
    names: dict[str, str] = {}  # tool call id -> function name, to name the results
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request("each message needs a role", f"messages[{i}]")
        role = "system" if m["role"] == "developer" else m["role"]
        turn: dict[str, Any] = {"role": role, "content": _text(m.get("content"), i)}
        if role == "assistant" and m.get("tool_calls"):
            if not isinstance(m["tool_calls"], list):
                raise bad_request("tool_calls must be a list", f"messages[{i}].tool_calls")
            turn["tool_calls"] = [
                _history_call(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(m["tool_calls"])
            ]
            names.update((c["id"], c["function"]["name"]) for c in turn["tool_calls"] if "id" in c)
        elif role == "tool" and isinstance(ident := m.get("tool_call_id"), str):
            turn["tool_call_id"] = ident
            if name := m.get("name") if isinstance(m.get("name"), str) else names.get(ident):
                turn["name"] = name
        out.append(turn)
    return out


def _guidance(body: dict[str, Any]) -> list[str] | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return ["json_schema", json.dumps({"type": "object"})]
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema must be a JSON schema object", "response_format")
        return ["json_schema", json.dumps(schema)]
    raise bad_request(
        f"response_format type {kind!r} is not supported by this model",
        "response_format",
        fallback=True,
        code="unsupported_parameter",
    )


def _check_penalties(body: dict[str, Any]) -> None:
    """Refuse what onnxruntime-genai cannot apply (it has ``repetition_penalty`` only); zeros and an empty
    ``logit_bias``, which OpenAI clients send by default and which change nothing, pass."""
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, -2.0, 2.0):
            raise bad_request(
                f"{name} is not supported by this model (onnxruntime-genai has repetition_penalty only): "
                "send 0 or leave it out",
                name,
                fallback=True,
                code="unsupported_parameter",
            )
    bias = body.get("logit_bias")
    if bias is None:
        return
    if not isinstance(bias, dict):
        raise bad_request("logit_bias must be an object of token ids to numbers", "logit_bias")
    if any(value != 0 for value in bias.values()):
        raise bad_request(
            "logit_bias is not supported by this model: send {} or leave it out",
            "logit_bias",
            fallback=True,
            code="unsupported_parameter",
        )


def parse_request(endpoint: str, body: dict[str, Any]) -> ChatJob:
    """Check an OpenAI body and turn it into a worker request (raises ProviderError 400 for what is refused)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request("n > 1 is not supported by the local engine: send n separate requests", "n")
    if body.get("functions") and body.get("function_call") != "none":
        raise bad_request(
            "functions are not supported by this model: send them as tools",
            "functions",
            fallback=True,
            code="unsupported_parameter",
        )
    if body.get("logprobs") or body.get("top_logprobs"):
        raise bad_request(
            "logprobs are not supported by this model", "logprobs", fallback=True, code="unsupported_parameter"
        )
    message: GenRequest = {}
    chat = endpoint == "chat/completions"
    plan = check_tools(body) if chat else None
    if chat:
        message["messages"] = _messages(body.get("messages"))
        if plan is not None and plan.mode != "none":
            message["tools"] = plan.tools
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise bad_request("prompt must be one string", "prompt")
        message["prompt"] = prompt
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise bad_request("max_tokens must be a positive integer", "max_tokens")
    message["max_tokens"] = limit
    search: dict[str, Any] = {}
    temperature = _number(body, "temperature", 0.0, 2.0)
    if temperature is not None:
        search["do_sample"] = temperature > 0
        if temperature > 0:
            search["temperature"] = temperature
    for name, lo, hi in (("top_p", 0.0, 1.0), ("top_k", 0, 1_000_000), ("repetition_penalty", 0.01, 10.0)):
        value = _number(body, name, lo, hi)
        if value is not None:
            search[name] = int(value) if name == "top_k" else value
    if (seed := body.get("seed")) is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise bad_request("seed must be an integer", "seed")
        search["random_seed"] = seed % (2**31)
    _check_penalties(body)
    message["search"] = search
    message["guidance"] = _guidance(body)
    if plan is not None and plan.mode == "required":  # the answer must be a call: its grammar wins
        message["guidance"] = call_guidance(plan, limit)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("stop must be a non-empty string or a list of up to 4 of them", "stop")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    names = plan.names if plan is not None and plan.mode != "none" else None
    return ChatJob(message, stops, include_usage, chat, names)


class StopMatcher:
    """Finds stop strings in streamed text, holding back any tail that could be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.held = ""
        self.hold = max((len(s) for s in stops), default=1) - 1

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return ``(text safe to emit, stopped)``. After a stop, nothing more should be fed."""
        if not self.stops:
            return text, False
        buffer = self.held + text
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return buffer[: min(hits)], True
        cut = len(buffer)
        for k in range(min(self.hold, len(buffer)), 0, -1):
            if any(s.startswith(buffer[-k:]) for s in self.stops):
                cut = len(buffer) - k
                break
        self.held = buffer[cut:]
        return buffer[:cut], False

    def flush(self) -> str:
        """Text held back, released at the end of the sequence."""
        held, self.held = self.held, ""
        return held


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """An OpenAI usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_id(chat: bool) -> str:
    """A fresh completion id."""
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def chunk(
    ident: str,
    model: str,
    created: int,
    chat: bool,
    *,
    delta: dict[str, Any] | None = None,
    text: str | None = None,
    finish: str | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` (or ``text_completion`` chunk) with a single choice."""
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
        out = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [choice],
        }
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        out = {"id": ident, "object": "text_completion", "created": created, "model": model, "choices": [choice]}
    if with_usage:
        out["usage"] = None
    return out


def response_body(
    model: str,
    chat: bool,
    text: str,
    finish: str,
    prompt_tokens: int,
    completion_tokens: int,
    calls: list[ToolCall] | None = None,
) -> dict[str, Any]:
    """A whole ``chat.completion`` (or ``text_completion``) body; with ``calls``, the text is what was outside
    them (None when blank) and the finish reason ``tool_calls``."""
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if calls:
            message["content"] = text.strip() or None
            message["tool_calls"] = [call.message() for call in calls]
            finish = "tool_calls"
        choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {
        "id": new_id(chat),
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
    }

"""OpenAI request and response shapes for the local provider: body -> worker request, pieces -> chunks.

What it cannot honour is refused with a 400, never dropped: ``n`` > 1 and non-text content for good; ``tools``,
``logprobs`` and unknown ``response_format`` types with ``fallback`` set (a remote deployment may).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from providers.base import ProviderError

__all__ = ["ChatJob", "StopMatcher", "chunk", "parse_request", "response_body", "usage"]


@dataclass(slots=True)
class ChatJob:
    """What the worker is asked for, plus what the gateway side does itself (stop strings, chunk shape)."""

    message: dict[str, Any]
    stop: list[str]
    include_usage: bool
    chat: bool


def _bad(message: str, param: str, *, fallback: bool = False, code: str = "invalid_request") -> ProviderError:
    return ProviderError(
        message, status=400, type="invalid_request_error", code=code, param=param, fallback=fallback, cooldown=False
    )


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
                raise _bad(
                    f"this model accepts text only, not {kind!r} content",
                    f"messages[{index}].content",
                    fallback=True,
                    code="unsupported_content",
                )
        return "".join(parts)
    raise _bad("message content must be a string or a list of parts", f"messages[{index}].content")


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _bad(f"{name} must be a number from {lo} to {hi}", name)
    return float(value)


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
            raise _bad("response_format.json_schema.schema must be a JSON schema object", "response_format")
        return ["json_schema", json.dumps(schema)]
    raise _bad(
        f"response_format type {kind!r} is not supported by this model",
        "response_format",
        fallback=True,
        code="unsupported_parameter",
    )


def parse_request(endpoint: str, body: dict[str, Any]) -> ChatJob:
    """Check an OpenAI body and turn it into a worker request (raises ProviderError 400 for what is refused)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("n > 1 is not supported by the local engine: send n separate requests", "n")
    for name in ("tools", "functions"):
        if body.get(name) and body.get("tool_choice") != "none":
            raise _bad(f"{name} are not supported by this model", name, fallback=True, code="unsupported_parameter")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _bad("logprobs are not supported by this model", "logprobs", fallback=True, code="unsupported_parameter")
    message: dict[str, Any] = {}
    chat = endpoint == "chat/completions"
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("messages must be a non-empty list", "messages")
        out = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _bad("each message needs a role", f"messages[{i}]")
            role = "system" if m["role"] == "developer" else m["role"]
            out.append({"role": role, "content": _text(m.get("content"), i)})
        message["messages"] = out
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _bad("prompt must be one string", "prompt")
        message["prompt"] = prompt
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise _bad("max_tokens must be a positive integer", "max_tokens")
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
            raise _bad("seed must be an integer", "seed")
        search["random_seed"] = seed % (2**31)
    message["search"] = search
    message["guidance"] = _guidance(body)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise _bad("stop must be a non-empty string or a list of up to 4 of them", "stop")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return ChatJob(message, stops, include_usage, chat)


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
    model: str, chat: bool, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A whole ``chat.completion`` (or ``text_completion``) body."""
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": finish,
        }
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

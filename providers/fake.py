"""An in-process provider that echoes the last user message: try the gateway without any model.

``{"type": "fake", "models": ["echo"]}`` answers ``You said: <last user message>`` (its own whitespace kept), word
by word when streaming, with honest word counts as usage. It is also the zero-cost upstream of the gateway's benchmark.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from minigate.providers.base import ChunkStream, Provider, ProviderError, ProviderRequest
from minigate.providers.registry import ProviderContext, ProviderRegistry, ProviderType, always_local

__all__ = ["FakeProvider", "FakeProviderConfig", "register"]


class FakeProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A ``fake`` provider section: the model names it answers for and a pause between streamed words."""

    type: str = "fake"
    models: list[str] = msgspec.field(default_factory=lambda: ["echo"])
    delay: float = 0.0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


_WORD = re.compile(r"\s*\S+")


def _words(text: str) -> list[str]:
    """``text`` as streamed pieces, each word with the whitespace before it (newlines and indentation kept); the
    first one opens with a single space, and the ends are trimmed."""
    pieces = _WORD.findall(text.strip())
    return [" " + pieces[0], *pieces[1:]] if pieces else []


def _answer(request: ProviderRequest) -> tuple[list[str], int]:
    body = request.body
    if request.endpoint == "completions":
        prompt = body.get("prompt")
        words = _words(_text_of(prompt if isinstance(prompt, str) else " ".join(map(str, prompt or []))))
        return words or [" ..."], len(words)
    messages = body.get("messages") or []
    last = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
    words = ["You", " said:", *_words(last)]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return (words[:limit] if isinstance(limit, int) and limit > 0 else words), prompt_tokens


class _WordStream(ChunkStream):
    def __init__(self, provider: FakeProvider, request: ProviderRequest) -> None:
        self._provider = provider
        self._request = request

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        request = self._request
        words, prompt_tokens = _answer(request)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": request.model}
        chat = request.endpoint == "chat/completions"
        base["object"] = "chat.completion.chunk" if chat else "text_completion"
        if chat:
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        for word in words:
            if self._provider.config.delay:
                await asyncio.sleep(self._provider.config.delay)
            piece = {"delta": {"content": word}} if chat else {"text": word}
            yield {**base, "choices": [{"index": 0, **piece, "finish_reason": None}]}
        last: dict[str, Any] = {"delta": {}} if chat else {"text": ""}
        yield {**base, "choices": [{"index": 0, **last, "finish_reason": "stop"}]}
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if (request.body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": usage}

    async def aclose(self) -> None:
        return None


class FakeProvider(Provider):
    """Echoes the last user message; see the module docstring."""

    type_name = "fake"
    endpoints = frozenset({"chat/completions", "completions", "embeddings"})

    def __init__(self, name: str, config: FakeProviderConfig) -> None:
        super().__init__(name)
        self.config = config

    def models(self) -> list[str]:
        return list(self.config.models)

    def _check_model(self, request: ProviderRequest) -> None:
        if request.model not in self.config.models:
            raise ProviderError(
                f"model {request.model!r} not found",
                status=404,
                type="invalid_request_error",
                code="model_not_found",
                cooldown=False,
            )

    async def complete(self, request: ProviderRequest) -> dict[str, Any]:
        self._check_model(request)
        created = int(time.time())
        if request.endpoint == "embeddings":
            inputs = request.body.get("input")
            items = [inputs] if isinstance(inputs, str) else list(inputs or [])
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(str(x)) % 7), 1.0, 0.0]}
                for i, x in enumerate(items)
            ]
            n = sum(len(str(x).split()) for x in items)
            usage = {"prompt_tokens": n, "total_tokens": n}
            return {"object": "list", "data": data, "model": request.model, "usage": usage}
        words, prompt_tokens = _answer(request)
        text = "".join(words)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words)}
        usage["total_tokens"] = prompt_tokens + len(words)
        if request.endpoint == "completions":
            choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "stop"}
            obj = "text_completion"
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            obj = "chat.completion"
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        return {
            "id": ident,
            "object": obj,
            "created": created,
            "model": request.model,
            "choices": [choice],
            "usage": usage,
        }

    async def open_stream(self, request: ProviderRequest) -> ChunkStream:
        self._check_model(request)
        return _WordStream(self, request)


def register(registry: ProviderRegistry) -> None:
    """Register the ``fake`` provider type."""

    def factory(name: str, config: FakeProviderConfig, context: ProviderContext) -> Provider:
        return FakeProvider(name, config)

    registry.register(ProviderType("fake", FakeProviderConfig, factory, local=always_local, vision=False))

"""Helpers shared by the onnxruntime-genai provider tests."""

from __future__ import annotations

import time
from typing import Any

from minigate.providers.base import ProviderRequest

TINY = "tiny"


def chat(content: str = "hello there", model: str = TINY, stream: bool = False, **body: Any) -> ProviderRequest:
    """A chat request for the provider."""
    payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return ProviderRequest("chat/completions", model, payload, stream, time.monotonic() + 60)


async def collect(stream: Any) -> list[dict[str, Any]]:
    """Every chunk of a stream (closing it at the end)."""
    try:
        return [c async for c in stream]
    finally:
        await stream.aclose()

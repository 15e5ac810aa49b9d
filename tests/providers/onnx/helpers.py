"""Helpers shared by the onnxruntime-genai provider tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from minigate.providers.base import ProviderRequest

TINY = "tiny"


def local_config(models_dir: Path, max_context: int, **local: Any) -> dict[str, Any]:
    """A gateway config whose default agent is the tiny model of provider ``local`` (``local``: more settings)."""
    section = {"type": "onnxruntime-genai", "models_dir": str(models_dir), "idle_ttl": None, "max_context": max_context}
    return {
        "agents": {"defaults": {"model": {"primary": f"local/{TINY}"}}},
        "models": {"providers": {"local": {**section, **local}}},
    }


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

"""The built-in provider types, as a plugin: its ``init`` hook registers them exactly as a third-party plugin
registers its own (``minigate.gateway.plugins.loader`` loads it first, through the same hook)."""

from __future__ import annotations

from minigate.gateway.plugins.hookspecs import PluginAPI
from minigate.providers import anthropic, fake, onnx, openai_compat
from minigate.providers.onnx import embed_provider

__all__ = ["init"]


def init(api: PluginAPI) -> None:
    """Plugin hook: register the ``openai``, ``anthropic``, ``onnxruntime-genai``, ``onnx-embeddings`` and ``fake``
    provider types."""
    for register in (openai_compat.register, anthropic.register, onnx.register, embed_provider.register, fake.register):
        register(api.providers)

"""The real default model, SmolLM2-135M-Instruct, converted once from its PyPI wheel (``default_models_dir``)."""

from __future__ import annotations

from pathlib import Path

from tests.providers.onnx.helpers import chat, collect

MODEL = "smollm2-135m-instruct"


async def test_smollm2_knows_the_capital_of_france(default_models_dir: Path) -> None:
    from providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=str(default_models_dir), idle_ttl=None))
    try:
        question = "What is the capital of France?"
        body = await provider.complete(chat(question, model=MODEL, max_tokens=30, temperature=0))
        assert "Paris" in body["choices"][0]["message"]["content"]
        stream = await provider.open_stream(chat(question, model=MODEL, max_tokens=30, temperature=0, stream=True))
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in await collect(stream) if c["choices"])
        assert "Paris" in text
    finally:
        await provider.close()

"""The real default model, SmolLM2-135M-Instruct: runs only where it has been converted.

Make it with ``python -m providers.onnx.convert pull`` (into ``./models``, or ``$MINIGATE_MODELS_DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.providers.onnx.helpers import chat, collect

MODEL = "smollm2-135m-instruct"
MODELS_DIR = Path(os.environ.get("MINIGATE_MODELS_DIR") or "models").resolve()

pytestmark = pytest.mark.skipif(
    not (MODELS_DIR / MODEL / "genai_config.json").is_file(),
    reason=f"the converted {MODEL} is not in {MODELS_DIR} (python -m providers.onnx.convert pull)",
)


async def test_smollm2_knows_the_capital_of_france() -> None:
    from providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=str(MODELS_DIR), idle_ttl=None))
    try:
        question = "What is the capital of France?"
        body = await provider.complete(chat(question, model=MODEL, max_tokens=30, temperature=0))
        assert "Paris" in body["choices"][0]["message"]["content"]
        stream = await provider.open_stream(chat(question, model=MODEL, max_tokens=30, temperature=0, stream=True))
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in await collect(stream) if c["choices"])
        assert "Paris" in text
    finally:
        await provider.close()

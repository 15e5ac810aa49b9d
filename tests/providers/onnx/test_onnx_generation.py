"""Each local model's sampling defaults (``generation_config.json``), the default cap on answer length, and the
OpenAI penalties onnxruntime-genai cannot apply (refused unless they change nothing)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.providers.base import ProviderError
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.providers.onnx.helpers import TINY, chat

QUESTION = "What is the capital of France?"


def _folder(models_dir: Path, tmp_path: Path, generation: dict[str, Any] | None) -> Path:
    """A models folder holding a copy of the tiny model, with ``generation`` as its generation_config.json."""
    root = tmp_path / "models"
    shutil.copytree(models_dir / TINY, root / TINY)
    if generation is not None:
        (root / TINY / "generation_config.json").write_text(json.dumps(generation))
    return root


def _text(body: dict[str, Any]) -> str:
    return str(body["choices"][0]["message"]["content"])


async def test_generation_config_caps_the_answer_when_the_client_gives_no_max_tokens(
    make_provider: Any, models_dir: Path, tmp_path: Path
) -> None:
    folder = _folder(models_dir, tmp_path, {"max_new_tokens": 7, "do_sample": False})
    provider = await make_provider(models_dir=str(folder))
    body = await provider.complete(chat(QUESTION))
    assert body["usage"]["completion_tokens"] == 7 and body["choices"][0]["finish_reason"] == "length"
    # An explicit max_tokens is the client's, past the model's default.
    body = await provider.complete(chat(QUESTION, max_tokens=12))
    assert body["usage"]["completion_tokens"] == 12


async def test_without_generation_config_the_provider_default_caps_the_answer(make_provider: Any) -> None:
    provider = await make_provider(default_max_tokens=9)
    body = await provider.complete(chat(QUESTION))
    assert body["usage"]["completion_tokens"] == 9 and body["choices"][0]["finish_reason"] == "length"
    body = await provider.complete(chat(QUESTION, max_tokens=15))
    assert body["usage"]["completion_tokens"] == 15


async def test_generation_config_sampling_applies_unless_the_request_sets_it(
    make_provider: Any, models_dir: Path, tmp_path: Path
) -> None:
    plain = await make_provider()
    greedy = _text(await plain.complete(chat(QUESTION, max_tokens=24, temperature=0)))
    penalised = _text(await plain.complete(chat(QUESTION, max_tokens=24, temperature=0, repetition_penalty=5.0)))
    assert greedy != penalised  # the tiny model repeats itself; a strong penalty changes its answer
    folder = _folder(models_dir, tmp_path, {"do_sample": False, "repetition_penalty": 5.0, "temperature": 0.7})
    tuned = await make_provider(models_dir=str(folder))
    assert _text(await tuned.complete(chat(QUESTION, max_tokens=24))) == penalised
    assert _text(await tuned.complete(chat(QUESTION, max_tokens=24, repetition_penalty=1.0))) == greedy


@pytest.mark.parametrize(
    ("field", "value"),
    [("presence_penalty", 0.5), ("frequency_penalty", -1.0), ("logit_bias", {"15": 10})],
)
async def test_penalties_the_engine_cannot_apply_are_refused(provider: Any, field: str, value: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(QUESTION, max_tokens=4, **{field: value}))
    error = info.value
    assert (error.status, error.code, error.param) == (400, "unsupported_parameter", field)
    assert error.capability and error.fallback and not error.cooldown
    assert field in str(error)


async def test_zero_penalties_and_an_empty_logit_bias_are_accepted(provider: Any) -> None:
    # OpenAI clients send these by default; they change nothing.
    body = await provider.complete(
        chat(QUESTION, max_tokens=4, presence_penalty=0, frequency_penalty=0.0, logit_bias={})
    )
    assert body["usage"]["completion_tokens"] == 4
    with pytest.raises(ProviderError) as info:
        await provider.complete(chat(QUESTION, max_tokens=4, presence_penalty="high"))
    assert (info.value.status, info.value.param) == (400, "presence_penalty")


def test_readme_first_curl_gets_a_short_answer_from_the_default_model(
    gateway_factory: Callable[..., GatewayServer], default_models_dir: Path
) -> None:
    """The README's first call, as it is written (no max_tokens, no temperature), through ``minigate serve``."""
    local = {"type": "onnxruntime-genai", "models_dir": str(default_models_dir), "idle_ttl": None}
    config = {
        "agents": {"defaults": {"model": {"primary": "local/smollm2-135m-instruct"}}},
        "models": {"providers": {"local": local}},
    }
    gateway = gateway_factory(config)
    body = {"model": "default", "messages": [{"role": "user", "content": QUESTION}]}
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    answer = httpx.post(f"{gateway.url}/chat/completions", json=body, headers=headers, timeout=120).json()
    choice = answer["choices"][0]
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop", choice
    assert answer["usage"]["completion_tokens"] <= 64, answer["usage"]


def test_conversion_keeps_the_generation_config_beside_the_model(tmp_path: Path) -> None:
    """The model builder drops generation_config.json; an import keeps it, so the worker finds the defaults."""
    for tool in ("torch", "transformers", "tokenizers", "onnx", "onnx_ir", "safetensors"):
        pytest.importorskip(tool)
    from minigate.providers.onnx.convert import import_model
    from minigate.providers.onnx.engine import generation_defaults
    from minigate.providers.onnx.progress import Progress
    from tests.providers.onnx import tinymodel

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    tinymodel._write_tokenizer(hf_dir)
    tinymodel._write_model(hf_dir)
    written = json.loads((hf_dir / "generation_config.json").read_text())
    written.update(repetition_penalty=1.15, max_new_tokens=300, top_k=20)
    (hf_dir / "generation_config.json").write_text(json.dumps(written))
    path = import_model(hf_dir, tmp_path / "models", "from-hf", progress=Progress(3, quiet=True))
    assert generation_defaults(str(path)) == {"top_k": 20, "repetition_penalty": 1.15, "max_new_tokens": 300}


def test_penalties_through_the_gateway_zero_passes_and_non_zero_is_a_400(
    gateway_factory: Callable[..., GatewayServer], default_models_dir: Path
) -> None:
    local = {"type": "onnxruntime-genai", "models_dir": str(default_models_dir), "idle_ttl": None}
    gateway = gateway_factory(
        {
            "agents": {"defaults": {"model": {"primary": "local/smollm2-135m-instruct"}}},
            "models": {"providers": {"local": local}},
        }
    )
    client = gateway.client()
    question = [{"role": "user", "content": QUESTION}]
    answer = client.chat.completions.create(
        model="default", messages=question, presence_penalty=0, frequency_penalty=0, logit_bias={}
    )
    assert "Paris" in (answer.choices[0].message.content or "")
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    for field, value in (("presence_penalty", 0.6), ("frequency_penalty", 1.0), ("logit_bias", {"42": -100})):
        body = {"model": "default", "messages": question, field: value}
        raw = httpx.post(f"{gateway.url}/chat/completions", json=body, headers=headers, timeout=60)
        error = raw.json()["error"]
        assert (raw.status_code, error["code"], error["param"]) == (400, "unsupported_parameter", field), error

"""The ``onnx-embeddings`` provider on the real all-MiniLM-L6-v2: meaning, formats, dimensions, batching, limits."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from minigate.providers.base import ProviderError
from minigate.providers.onnx.embed_provider import EmbeddingProviderConfig, OnnxEmbeddingsProvider
from tests.providers.onnx.embed_helpers import EMBED_MODEL, embed_request, embedding_models_dir


@pytest.fixture(scope="session")
def embed_dir() -> Path:
    return embedding_models_dir()


@pytest.fixture
async def provider(embed_dir: Path) -> AsyncIterator[OnnxEmbeddingsProvider]:
    made = OnnxEmbeddingsProvider("embed", EmbeddingProviderConfig(models_dir=str(embed_dir), idle_ttl=None))
    await made.start()
    yield made
    await made.close()


async def vectors(provider: OnnxEmbeddingsProvider, inputs: Any, **fields: Any) -> np.ndarray[Any, Any]:
    body = await provider.complete(embed_request(inputs, **fields))
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)


async def test_related_sentences_are_closer_than_unrelated_ones(provider: OnnxEmbeddingsProvider) -> None:
    pairs = [
        ("A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."),
        ("How do I reset my password?", "I forgot my login password.", "The cat sat on the warm windowsill."),
        ("The stock market fell sharply today.", "Shares dropped a lot on Wall Street.", "She plays the violin."),
        ("Paris is the capital of France.", "France's capital city is Paris.", "Photosynthesis needs light."),
    ]
    for anchor, related, unrelated in pairs:
        a, r, u = await vectors(provider, [anchor, related, unrelated])
        assert float(a @ r) > float(a @ u) + 0.2, (anchor, float(a @ r), float(a @ u))
    assert provider.models() == [EMBED_MODEL]


async def test_vectors_are_unit_length_with_the_model_card_s_size(provider: OnnxEmbeddingsProvider) -> None:
    got = await vectors(provider, ["one", "two words", "a somewhat longer sentence about nothing"])
    assert got.shape == (3, 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


async def test_float_and_base64_decode_to_the_same_vectors(provider: OnnxEmbeddingsProvider) -> None:
    texts = ["first text", "second, longer text to embed"]
    floats = await vectors(provider, texts, encoding_format="float")
    body = await provider.complete(embed_request(texts, encoding_format="base64"))
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    assert decoded.shape == floats.shape
    assert np.array_equal(decoded, floats)


async def test_batched_vectors_match_one_by_one(provider: OnnxEmbeddingsProvider) -> None:
    texts = [f"sentence number {i} " + "with padding words " * (i % 7) for i in range(40)]
    together = await vectors(provider, texts)
    alone = np.array([(await vectors(provider, t))[0] for t in texts])
    assert np.abs(together - alone).max() < 1e-5


async def test_concurrent_requests_share_batches(provider: OnnxEmbeddingsProvider) -> None:
    texts = [f"request {i} about topic {i % 5}" for i in range(24)]
    await vectors(provider, "warm up")
    runner = provider._runners[EMBED_MODEL]
    before = runner.batches
    answers = await asyncio.gather(*(vectors(provider, t) for t in texts))
    assert runner.batches - before < len(texts)  # requests that arrived during a batch went together
    alone = await vectors(provider, texts)
    assert np.abs(np.concatenate(answers) - alone).max() < 1e-5


async def test_usage_counts_the_tokens_the_model_saw(provider: OnnxEmbeddingsProvider) -> None:
    runner = await provider.load(EMBED_MODEL)
    texts = ["hello world", "tokenization counts word pieces like unaffordable"]
    body = await provider.complete(embed_request(texts))
    expected = sum(len(ids) for ids in runner.model.tokenize(texts))
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    assert expected == 4 + len(runner.model.tokenize([texts[1]])[0])  # [CLS] hello world [SEP] = 4


async def test_token_arrays_embed_like_their_text(provider: OnnxEmbeddingsProvider) -> None:
    runner = await provider.load(EMBED_MODEL)
    text = "token arrays are the tokenizer's ids"
    ids = runner.model.tokenizer.encode(text, add_special_tokens=False).ids
    from_text = await vectors(provider, text)
    one_array = await vectors(provider, ids)
    two_arrays = await vectors(provider, [ids, ids[:3]])
    assert np.abs(from_text - one_array).max() < 1e-5
    assert np.abs(two_arrays[0] - from_text[0]).max() < 1e-5 and two_arrays.shape == (2, 384)


async def test_dimensions_of_a_model_that_is_not_matryoshka(provider: OnnxEmbeddingsProvider) -> None:
    assert (await vectors(provider, "same size", dimensions=384)).shape == (1, 384)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(embed_request("shorter", dimensions=128))
    err = caught.value
    assert (err.status, err.param, err.code, err.capability) == (400, "dimensions", "unsupported_dimensions", True)
    assert "not a Matryoshka model" in err.message


async def test_dimensions_of_a_matryoshka_model_cut_and_renormalise(embed_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mrl"
    shutil.copytree(embed_dir / EMBED_MODEL, folder)  # the same weights, declared Matryoshka in its spec
    spec = json.loads((folder / "embedding.json").read_text())
    (folder / "embedding.json").write_text(json.dumps({**spec, "matryoshka_dimensions": [256, 128, 64]}))
    provider = OnnxEmbeddingsProvider("embed", EmbeddingProviderConfig(models_dir=str(tmp_path), idle_ttl=None))
    try:
        full = await vectors(provider, ["cut me short"], model="mrl")
        short = await vectors(provider, ["cut me short"], model="mrl", dimensions=128)
        assert short.shape == (1, 128)
        assert np.abs(short[0] - full[0, :128] / np.linalg.norm(full[0, :128])).max() < 1e-6
        with pytest.raises(ProviderError, match="at most 384") as caught:
            await provider.complete(embed_request("x", model="mrl", dimensions=512))
        assert caught.value.param == "dimensions"
    finally:
        await provider.close()


async def test_inputs_over_the_limit_are_refused_not_truncated(provider: OnnxEmbeddingsProvider) -> None:
    runner = await provider.load(EMBED_MODEL)
    fits = "word " * 254  # 254 pieces + [CLS] + [SEP] = 256, the model's max_seq_length
    assert len(runner.model.tokenize([fits])[0]) == 256
    assert (await vectors(provider, fits)).shape == (1, 384)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(embed_request(["short", fits + "word"]))
    err = caught.value
    assert (err.status, err.code, err.param, err.fallback) == (400, "context_length_exceeded", "input", True)
    assert "input[1] has 257 tokens" in err.message and "at most 256" in err.message


@pytest.mark.parametrize(
    ("inputs", "fields", "param", "text"),
    [
        ("", {}, "input", "input[0] is empty"),
        (["ok", ""], {}, "input", "input[1] is empty"),
        ([], {}, "input", "must be a string"),
        (["text", 5], {}, "input", "not mixed"),
        ([[1, 2], "text"], {}, "input", "not mixed"),
        ({"text": "x"}, {}, "input", "must be a string"),
        ([True, False], {}, "input", "must be a string"),
        ([101, 999999], {}, "input", "outside this model's vocabulary"),
        ("x", {"encoding_format": "int8"}, "encoding_format", "float or base64"),
        ("x", {"dimensions": 0}, "dimensions", "positive integer"),
        (["x"] * 2049, {}, "input", "at most 2048"),
    ],
)
async def test_bad_requests_get_openai_shaped_400s(
    provider: OnnxEmbeddingsProvider, inputs: Any, fields: dict[str, Any], param: str, text: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.complete(embed_request(inputs, **fields))
    err = caught.value
    assert (err.status, err.type, err.param, err.fallback) == (400, "invalid_request_error", param, False)
    assert text in err.message


async def test_unknown_models_streams_and_chat_are_refused(provider: OnnxEmbeddingsProvider, embed_dir: Path) -> None:
    for model in ("nope", "../etc", "smollm2-135m-instruct"):  # a chat model's folder is no embedding model
        with pytest.raises(ProviderError) as caught:
            await provider.complete(embed_request("x", model=model))
        assert (caught.value.status, caught.value.code) == (404, "model_not_found")
    with pytest.raises(ProviderError, match="not streamed"):
        await provider.open_stream(embed_request("x"))
    request = embed_request("x")
    request.endpoint = "chat/completions"
    with pytest.raises(ProviderError) as caught:
        await provider.complete(request)
    assert caught.value.code == "unsupported_endpoint"


async def test_idle_models_unload_and_load_again(embed_dir: Path) -> None:
    provider = OnnxEmbeddingsProvider("embed", EmbeddingProviderConfig(models_dir=str(embed_dir), idle_ttl=0.2))
    await provider.start()
    try:
        first = await vectors(provider, "still here?")
        assert [i.state for i in provider.info()] == ["loaded"]
        for _ in range(100):  # the reaper looks every 0.05 s
            if not provider._runners:
                break
            await asyncio.sleep(0.05)
        assert [i.state for i in provider.info()] == ["available"]
        assert np.array_equal(await vectors(provider, "still here?"), first)
    finally:
        await provider.close()

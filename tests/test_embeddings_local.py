"""``POST /v1/embeddings`` on the local all-MiniLM-L6-v2 through a running gateway, with the openai SDK: agents'
chains and fallbacks as for chat, ``/v1/models``, usage rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.fakes.upstream import FakeUpstream, Status
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.providers.onnx.embed_helpers import EMBED_MODEL, embedding_models_dir

LOCAL = f"embed/{EMBED_MODEL}"


@pytest.fixture(scope="module")
def embed_dir() -> Path:
    return embedding_models_dir()


def config(embed_dir: Path, remote: FakeUpstream) -> dict[str, Any]:
    return {
        "agents": {
            "defaults": {"model": {"primary": LOCAL}},
            "rag": {"model": {"primary": LOCAL, "fallbacks": ["remote/text-embedding-3-small"]}},
            "remote-first": {"model": {"primary": "remote/text-embedding-3-small", "fallbacks": [LOCAL]}},
        },
        "models": {
            "providers": {
                "embed": {"type": "onnx-embeddings", "models_dir": str(embed_dir), "idle_ttl": None},
                "remote": {"endpoint": remote.url, "auth": {"type": "api_key", "value": "primary-key"}, "timeout": 5},
            }
        },
    }


def test_the_openai_sdk_gets_local_embeddings(
    gateway_factory: Callable[..., GatewayServer], embed_dir: Path, primary: FakeUpstream
) -> None:
    gateway = gateway_factory(config(embed_dir, primary))
    client = gateway.client()
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]
    answer = client.embeddings.create(model="rag", input=texts)  # the SDK asks for base64 and decodes it
    got = np.array([d.embedding for d in answer.data])
    assert got.shape == (3, 384) and answer.model == LOCAL
    assert got[0] @ got[1] > got[0] @ got[2] + 0.2
    as_floats = client.embeddings.create(model=LOCAL, input=texts, encoding_format="float")
    assert np.abs(np.array([d.embedding for d in as_floats.data]) - got).max() < 1e-6
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 3 * 2
    assert primary.requests == []  # nothing left the machine
    ids = [m.id for m in client.models.list().data]
    assert LOCAL in ids and "rag" in ids
    rows = gateway.wait_rows(2)
    assert [(r["endpoint"], r["provider"], r["status"]) for r in rows] == [("embeddings", "embed", 200)] * 2
    assert rows[0]["prompt_tokens"] == answer.usage.prompt_tokens


def test_a_refused_dimension_goes_on_along_the_chain(
    gateway_factory: Callable[..., GatewayServer], embed_dir: Path, primary: FakeUpstream
) -> None:
    gateway = gateway_factory(config(embed_dir, primary))
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as caught:  # a chain of the local model alone: its 400
        client.embeddings.create(model="default", input="short please", dimensions=64)
    assert caught.value.body["param"] == "dimensions"  # type: ignore[index]
    assert "not a Matryoshka model" in caught.value.message
    assert primary.requests == []
    # The fake upstream listens on loopback, so it counts as local: the capability refusal may go on to it (a
    # remote one needs the agent's capability_fallback; tests/routing/test_chain_privacy.py).
    answer = client.embeddings.create(model="rag", input="short please", dimensions=64, encoding_format="float")
    assert answer.model == "remote/text-embedding-3-small"
    assert [r.body["dimensions"] for r in primary.requests] == [64]


def test_a_failing_remote_falls_back_to_the_local_model(
    gateway_factory: Callable[..., GatewayServer], embed_dir: Path, primary: FakeUpstream
) -> None:
    gateway = gateway_factory(config(embed_dir, primary))
    primary.script(Status(503))
    response = httpx.post(
        f"{gateway.url}/embeddings",
        json={"model": "remote-first", "input": ["fallback works"], "encoding_format": "float"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-minigate-provider"] == "embed"
    body = response.json()
    assert body["model"] == LOCAL and len(body["data"][0]["embedding"]) == 384
    too_long = {"model": "rag", "input": "word " * 300, "encoding_format": "float"}
    response = httpx.post(
        f"{gateway.url}/embeddings", json=too_long, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    assert response.status_code == 200  # over the local model's 256 tokens: the remote one takes it
    assert response.json()["model"] == "remote/text-embedding-3-small"

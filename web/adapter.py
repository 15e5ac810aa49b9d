"""What the models page shows and does: provider and model views (never credentials), and model actions through
:mod:`minigate.gateway.runtime.manage`, the service the admin API uses too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.runtime.manage import manage_model
from minigate.providers.base import Provider, ProviderInfo

__all__ = [
    "ACTIONS",
    "ActionResult",
    "ModelView",
    "ProviderView",
    "context_windows",
    "dom_id",
    "import_progress",
    "model_action",
    "provider_views",
]

ACTIONS = ("load", "unload", "reload", "delete")
_METHODS = {"load": "load", "unload": "unload", "reload": "reload", "delete": "remove"}


@dataclass(slots=True)
class ActionResult:
    """What happened, as one line for the page."""

    ok: bool
    message: str


@dataclass(slots=True)
class ModelView:
    """One model row of the models page."""

    id: str
    state: str
    details: dict[str, Any] = field(default_factory=dict)
    cooldown_s: float = 0.0
    failures: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class ProviderView:
    """One provider section of the models page: never its credentials or headers."""

    name: str
    type: str
    endpoint: str | None
    local: bool
    models: list[ModelView]


def _safe_endpoint(config: Any) -> str | None:
    """The endpoint without user info, query or fragment (where credentials sometimes hide)."""
    endpoint = getattr(config, "endpoint", None)
    if not isinstance(endpoint, str):
        return None
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def dom_id(name: str) -> str:
    """An element id for any provider name (names may hold characters CSS selectors would choke on)."""
    return "p" + name.encode().hex()


def _pretty(key: str, value: Any) -> Any:
    if key == "prefix_cache" and isinstance(value, dict):  # a local model's prefix cache (onnx provider_summary)
        return (
            f"{value.get('hits', 0)} hits of {value.get('lookups', 0)} lookups, "
            f"{value.get('reused_tokens', 0):,} tokens reused, {value.get('prefilled_tokens', 0):,} prefilled, "
            f"{value.get('bytes', 0) / 2**20:,.0f} of {value.get('budget_bytes', 0) / 2**20:,.0f} MiB, "
            f"{value.get('evictions', 0)} evictions"
        )
    if key.endswith("_bytes") and isinstance(value, int | float):
        return f"{value / 2**20:,.0f} MiB"
    if key.endswith("_seconds") and isinstance(value, int | float):
        return f"{value:.1f} s"
    return value


def _supports(provider: Provider, action: str) -> bool:
    return callable(getattr(provider, _METHODS[action], None))


def _infos(provider: Provider) -> list[ProviderInfo]:
    info = getattr(provider, "info", None)
    if callable(info):
        result = info()
        if isinstance(result, list):
            return [i for i in result if isinstance(i, ProviderInfo)]
    return [ProviderInfo(model) for model in provider.models()]


def provider_views(gateway: Gateway) -> list[ProviderView]:
    """Every provider and its models with their state and health."""
    health = gateway.health.snapshot()
    views = []
    for name, provider in gateway.providers.items():
        type_name, config = gateway.config.providers.get(name, (provider.type_name, None))
        models = []
        for info in _infos(provider):
            state = health.get(f"{name}/{info.id}", {})
            models.append(
                ModelView(
                    id=info.id,
                    state=info.state,
                    details={k: _pretty(k, v) for k, v in info.details.items() if v is not None},
                    cooldown_s=float(state.get("cooldown_s") or 0.0),  # type: ignore[arg-type]
                    failures=int(state.get("failures") or 0),  # type: ignore[call-overload]
                    last_error=str(state["last_error"]) if state.get("last_error") else None,
                )
            )
        local = _supports(provider, "load") or callable(getattr(provider, "import_model", None))
        views.append(ProviderView(name, type_name, _safe_endpoint(config), local, models))
    return views


async def model_action(gateway: Gateway, provider_name: str, model: str, action: str) -> ActionResult:
    """Load, unload, reload or delete a local model, through the same code as the admin API."""
    if action not in ACTIONS:
        return ActionResult(False, "No such provider or action.")
    try:
        await manage_model(gateway, provider_name, model, action)
    except GatewayError as err:  # shown to the admin, never a 500
        return ActionResult(False, f"{action} {provider_name}/{model} failed: {err.message}")
    except Exception as err:
        return ActionResult(False, f"{action} {provider_name}/{model} failed: {err}")
    return ActionResult(True, f"{action}: {provider_name}/{model} done.")


async def import_progress(
    gateway: Gateway, provider_name: str, kind: str, source: str, name: str
) -> AsyncIterator[tuple[str, bool | None]]:
    """Pull a catalog model (``kind="pull"``) or import one from disk, yielding ``(progress line, outcome)``.

    ``outcome`` is None while running, then True or False on the last line. Calls the provider's own
    ``pull``/``import_model`` (the onnxruntime-genai provider has them) with a progress callback.
    """
    provider = gateway.providers.get(provider_name)
    method = "pull" if kind == "pull" else "import_model"
    if provider is None or not callable(getattr(provider, method, None)):
        yield f"{provider_name} cannot {'pull' if kind == 'pull' else 'import'} models.", False
        return
    if kind != "pull" and not (source and name):
        yield "Give the folder or file to import and a name for the model.", False
        return
    lines: asyncio.Queue[str] = asyncio.Queue()
    call = getattr(provider, method)
    work = (
        call(source or None, on_progress=lines.put_nowait)
        if kind == "pull"
        else call(source, name, on_progress=lines.put_nowait)
    )
    task: asyncio.Task[Any] = asyncio.ensure_future(work)
    try:
        while not task.done():
            getter = asyncio.ensure_future(lines.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result(), None
            else:
                getter.cancel()
        while not lines.empty():
            yield lines.get_nowait(), None
        error = task.exception()
        yield (f"Failed: {error}", False) if error else (f"Done: {task.result()}", True)
    finally:
        if not task.done():
            task.cancel()  # the admin went away: stop the conversion too


def context_windows(gateway: Gateway, names: Iterable[str]) -> dict[str, int]:
    """The context window, in tokens, of each name's first deployment where its provider reports one (local)."""
    by_ref: dict[str, int] = {}
    for provider_name, provider in gateway.providers.items():
        for info in _infos(provider):
            length = info.details.get("context_length")
            if isinstance(length, int) and not isinstance(length, bool) and length > 0:
                by_ref[f"{provider_name}/{info.id}"] = length
    windows: dict[str, int] = {}
    for name in names:
        route = gateway.routes.resolve(name)
        if route is not None and route.chain and route.chain[0].ref in by_ref:
            windows[name] = by_ref[route.chain[0].ref]
    return windows

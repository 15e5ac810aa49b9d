"""The models page (admin): providers and models with their state, model actions, and chain editing.

A remote upstream's models are "reachable" when a TCP connection to its endpoint opens now, and "unreachable" when
none does or the deployment cools down after failures; "unknown" when there is nothing to try. The probe sends no
request and no credentials, and never connects where the providers may not (link-local, metadata addresses).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.types import ASGIApp
from markupsafe import escape
from sse_starlette import EventSourceResponse, ServerSentEvent

from minigate.gateway.routing.routes import described
from minigate.gateway.runtime.gateway import Gateway
from minigate.providers.netguard import check_connect_address
from minigate.providers.onnx.device_choice import DeviceError, describe_devices
from minigate.providers.onnx.placement import Placement
from minigate.providers.upstream import HttpProvider
from minigate.web.adapter import ActionResult, ProviderView, dom_id, import_progress, model_action, provider_views
from minigate.web.chains import (
    apply_stored_overrides,
    base_config,
    delete_override,
    ensure_overrides,
    load_overrides,
    save_override,
    validate_chain,
)
from minigate.web.render import SECURITY_HEADERS, is_htmx, page, redirect
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["model_handlers"]


async def _agents(gateway: Gateway, web: WebState) -> list[dict[str, Any]]:
    """Each agent with its configured chain, its override and the chain in force."""
    base = base_config(gateway, web)
    overrides = await load_overrides(gateway.database)
    agents = []
    for name, agent in base.agents.items():
        route = gateway.routes.resolve(name)
        agents.append(
            {
                "name": name,
                "configured": agent.model.chain(),
                "override": overrides.get(name),
                "current": [_label(e) for e in described(route.chain)] if route else [],
                "grouped": agent.model.grouped(),  # shown read-only: the editor edits plain chains
            }
        )
    return agents


def _label(entry: str | dict[str, Any]) -> str:
    """A chain entry as the page shows it: a reference, or a group's strategy and members."""
    if isinstance(entry, str):
        return entry
    members = [m if isinstance(m, str) else f"{m['ref']} weight {m['weight']:g}" for m in entry["group"]]
    return f"group ({entry['strategy']}): {', '.join(members)}"


def _known_refs(gateway: Gateway) -> list[str]:
    return sorted({ident for ident, kind, _ in gateway.routes.listing() if kind == "model"})


async def _devices(gateway: Gateway) -> list[dict[str, Any]]:
    """Each local provider's back end and device and why (or why it cannot have them), and what the device probe
    found: the plugins installed and the devices each offers (the probe runs once per provider, about 0.5 s)."""
    out = []
    for name, provider in gateway.providers.items():
        placement = getattr(provider, "placement", None)
        if not isinstance(placement, Placement):
            continue
        with contextlib.suppress(DeviceError):
            await placement.resolve()
        probe = await placement.survey()
        out.append({"provider": name, **placement.describe(), **describe_devices(probe)})
    return out


_PROBE_TIMEOUT = 1.0  # seconds for every probe of the page together


async def _connects(endpoint: str) -> bool:
    """Whether a TCP connection to ``endpoint``'s host and port opens (at an address providers may use)."""
    parts = urlsplit(endpoint)
    if not parts.hostname:
        raise ValueError("no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError:  # the name does not resolve
        return False
    for family, _, _, _, address in found:
        try:
            check_connect_address(family, address)
            _, writer = await asyncio.open_connection(str(address[0]), int(address[1]))
        except OSError:
            continue
        writer.close()
        return True
    return False


async def _reachability(gateway: Gateway, views: list[ProviderView]) -> list[ProviderView]:
    """``views`` with each remote model's claimed "available" replaced by what is known now (see the module
    docstring)."""
    probes: dict[str, asyncio.Task[bool]] = {}
    for view in views:
        provider = gateway.providers.get(view.name)
        if isinstance(provider, HttpProvider) and view.endpoint:
            probes[view.name] = asyncio.ensure_future(_connects(view.endpoint))
    if probes:
        await asyncio.wait(probes.values(), timeout=_PROBE_TIMEOUT)
    for view in views:
        probe = probes.get(view.name)
        if probe is None:
            continue
        if not probe.done():
            probe.cancel()
        found = probe.result() if probe.done() and not probe.cancelled() and probe.exception() is None else None
        for model in view.models:
            if model.state != "available":
                continue
            if model.cooldown_s > 0 or found is False:
                model.state = "unreachable"
            else:
                model.state = "reachable" if found else "unknown"
    return views


async def _render(web: WebState, gateway: Gateway, admin: Session, status: int = 200, **extra: Any) -> Response[str]:
    context: dict[str, Any] = {"message": None, "chain_errors": {}, "chain_saved": None, **extra}
    return page(
        web,
        "models.html",
        admin,
        status=status,
        providers=await _reachability(gateway, provider_views(gateway)),
        agents=await _agents(gateway, web),
        known_refs=_known_refs(gateway),
        devices=await _devices(gateway),
        **context,
    )


@get("/models")
async def models_page(
    gateway: NamedDependency[Gateway], web: NamedDependency[WebState], admin: NamedDependency[Session]
) -> Response[str]:
    """Providers, models and agents' chains."""
    await ensure_overrides(gateway, web)
    return await _render(web, gateway, admin)


@post("/models/action")
async def models_action(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
) -> Response[str]:
    """Load, unload, reload or delete a model (through :mod:`minigate.web.adapter`)."""
    form = await request.form()
    result = await model_action(
        gateway, str(form.get("provider") or ""), str(form.get("model") or ""), str(form.get("action") or "")
    )
    await apply_stored_overrides(gateway, web)  # the provider's model list may have changed
    return await _render(web, gateway, admin, status=200 if result.ok else 409, message=result)


@post("/models/import")
async def models_import(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
) -> ASGIApp:
    """Pull or import a model; htmx gets the progress as Server-Sent Events, a plain form the outcome."""
    form = await request.form()
    provider = str(form.get("provider") or "")
    kind = "pull" if form.get("kind") == "pull" else "import"
    source, name = str(form.get("source") or "").strip()[:1000], str(form.get("name") or "").strip()[:200]
    progress = import_progress(gateway, provider, kind, source, name)
    if not is_htmx(request):
        last, ok = "", False
        async for line, outcome in progress:
            last, ok = line, bool(outcome)
        await apply_stored_overrides(gateway, web)
        if ok and web.announce is not None:  # the other worker processes list the new model too
            web.announce()
        response = await _render(web, gateway, admin, status=200 if ok else 409, message=ActionResult(ok, last))
        return response.to_asgi_response(None, request)

    async def events() -> AsyncIterator[ServerSentEvent]:
        target = f'<hx-partial hx-target="#import-log-{dom_id(provider)}" hx-swap="beforeend">'
        yield ServerSentEvent(data=f'<hx-partial hx-target="#import-log-{dom_id(provider)}" hx-swap="innerHTML">'
                              f"{escape(kind)} {escape(source or 'default model')}\n</hx-partial>")  # fmt: skip
        async for line, outcome in progress:
            css = "" if outcome is None else (' class="ok"' if outcome else ' class="error"')
            yield ServerSentEvent(data=f"{target}<span{css}>{escape(line)}</span>\n</hx-partial>")
            if outcome:
                await apply_stored_overrides(gateway, web)  # new models become routable
                if web.announce is not None:  # in the other worker processes too
                    web.announce()

    return cast(
        ASGIApp,
        EventSourceResponse(events(), ping=15, headers=SECURITY_HEADERS),  # sse-starlette adds its own SSE headers
    )


@post("/models/chain")
async def models_chain(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
) -> Response[Any]:
    """Save (``op=save``) or reset (``op=reset``) an agent's chain; it applies to the next request."""
    await ensure_overrides(gateway, web)
    form = await request.form()
    agent = str(form.get("agent") or "")
    base = base_config(gateway, web)
    if form.get("op") == "reset":
        if agent in base.agents:
            await delete_override(gateway.database, agent)
            await apply_stored_overrides(gateway, web)
    else:
        chain = [str(ref).strip() for ref in form.getall("chain", []) if str(ref).strip()]
        problems = validate_chain(gateway, base, agent, chain)
        if problems:
            message = ActionResult(False, f"Chain of {agent!r} not saved: {'; '.join(problems)}")
            return await _render(web, gateway, admin, status=422, chain_errors={agent: problems}, message=message)
        if chain == base.agents[agent].model.chain():
            await delete_override(gateway.database, agent)
        else:
            await save_override(gateway.database, agent, chain)
        await apply_stored_overrides(gateway, web)
    if web.announce is not None:  # the other worker processes apply the stored chains too
        web.announce()
    if not is_htmx(request):
        return redirect(request, "/models")
    return await _render(web, gateway, admin, chain_saved=agent)


def model_handlers() -> list[Any]:
    """The models page routes."""
    return [models_page, models_action, models_import, models_chain]

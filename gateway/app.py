"""The one place that builds the app: every route, dependency, exception handler and lifespan is named here."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from minigate.gateway.config.schema import Config, ConfigError
from minigate.gateway.core.errors import exception_handlers
from minigate.gateway.core.writes import write_deadline
from minigate.gateway.http.admin import admin_handlers
from minigate.gateway.http.api import v1_handlers
from minigate.gateway.http.audit import audit_handlers
from minigate.gateway.http.limits import body_deadline
from minigate.gateway.http.messages import messages_handlers, root_probe
from minigate.gateway.http.openapi import openapi_config
from minigate.gateway.http.responses import responses_handlers
from minigate.gateway.http.ws import ws_chat
from minigate.gateway.ops.drain import Drain
from minigate.gateway.ops.logs import AccessLine, Redactor
from minigate.gateway.ops.metrics_share import merge, publish
from minigate.gateway.ops.monitor import GatewayMetrics
from minigate.gateway.ops.observe import observe
from minigate.gateway.ops.refusals import Refusals
from minigate.gateway.plugins.loader import Extensions, builtin_extensions, shutdown_plugins
from minigate.gateway.routing.routes import Deployment
from minigate.gateway.runtime.audit import audited
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.runtime.reload import Reloader, config_path, reload_handler
from minigate.gateway.serving.workflows import workflow_routes
from minigate.gateway.supervisor import WorkerRole
from minigate.web import WebState, apply_stored_overrides, web_routes

__all__ = ["create_app"]

log = logging.getLogger("minigate")


def _gateway(state: State) -> Gateway:
    gateway: Gateway = state.gateway
    return gateway


def _reloader(state: State) -> Reloader:
    reloader: Reloader = state.reloader
    return reloader


def _usable(gateway: Gateway, deployment: Deployment) -> bool:
    provider = gateway.providers.get(deployment.provider)
    if provider is None or gateway.health.cooling(deployment.ref) > 0:
        return False
    listed = provider.models()
    return not listed or deployment.model in listed


@get("/health")
async def health() -> Response[bytes]:
    """Liveness: the process answers."""
    return Response(b'{"status":"ok"}', media_type="application/json")


# Usage rows waiting for the database longer than this turn /ready red: a commit takes milliseconds, and SQLite
# waits 5 s for a lock before it gives up, so a few seconds more is an outage, or a writer that no longer writes.
USAGE_HELD_LIMIT_S = 10.0


@get("/ready")
async def ready(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Readiness: not shutting down, the database answers, the default chain has a usable deployment (its
    provider exists and lists the model, and it is not cooling down), and usage rows are being stored (none has
    waited longer than ``USAGE_HELD_LIMIT_S``). When not ready, ``reason`` says why in words."""
    checks: dict[str, Any] = {"accepting": not gateway.drain.stopping, "database": await gateway.database.ping()}
    default = gateway.routes.resolve("default")
    if default is not None:
        checks["default_chain"] = any(_usable(gateway, d) for d in default.chain)
    held_for = gateway.usage.held_for
    checks["usage_stored"] = held_for <= USAGE_HELD_LIMIT_S
    ok = all(checks.values())
    body: dict[str, Any] = {"status": "ready" if ok else "not ready", "checks": checks}
    if (worker := request.app.state.worker) is not None:  # serve --workers N: which process answered
        body["worker"] = {"index": worker.index, "pid": os.getpid()}
    if not ok:
        reasons = {
            "accepting": "the gateway is shutting down",
            "database": "the database does not answer",
            "default_chain": "no deployment of the default chain is usable",
            "usage_stored": f"{gateway.usage.held} usage rows have waited {held_for:.0f} s for the database",
        }
        body["reason"] = "; ".join(reasons[name] for name, passed in checks.items() if not passed)
    return Response(msgspec.json.encode(body), status_code=200 if ok else 503, media_type="application/json")


@get("/metrics")
async def metrics(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Prometheus metrics (text format 0.0.4); see ``minigate.gateway.ops.monitor``. Under ``serve --workers N``,
    every worker's, labelled ``worker`` (``minigate.gateway.ops.metrics_share``)."""
    body = await gateway.metrics.scrape(gateway.providers, gateway.health, gateway.drain, gateway.usage)
    worker: WorkerRole | None = request.app.state.worker
    if worker is not None:
        publish(worker.runtime_dir, worker.index, body)
        body = merge(worker.runtime_dir, worker.index, body)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def _publish_metrics(gateway: Gateway, worker: WorkerRole, every: float = 5.0) -> None:
    """Keep this worker's file in the runtime folder fresh for scrapes that reach another worker."""
    while True:
        try:
            body = await gateway.metrics.scrape(gateway.providers, gateway.health, gateway.drain, gateway.usage)
            publish(worker.runtime_dir, worker.index, body)
        except Exception:
            log.exception("could not publish this worker's metrics")
        await asyncio.sleep(every)


def _announce(worker: WorkerRole | None) -> Callable[[], None] | None:
    """After an admin reload in one worker: SIGHUP to the supervisor, which passes it to every worker."""
    if worker is None:
        return None
    return lambda: os.kill(worker.supervisor, signal.SIGHUP)


def _version() -> str:
    try:
        return importlib.metadata.version("minigate")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0"


def create_app(
    config: Config,
    extensions: Extensions | None = None,
    *,
    redactor: Redactor | None = None,
    access_line: AccessLine | None = None,
    worker: WorkerRole | None = None,
) -> Litestar:
    """Build the Litestar app for ``config``; the gateway's resources open and close with the app's lifespan.

    ``app.state.drain`` is what ``minigate serve`` tells about SIGTERM; ``redactor`` (the log formatter's) learns the
    configured secrets at startup and after each reload; ``access_line`` writes request log lines (default: through the
    ``minigate.access`` logger). ``extensions`` are the plugins ``config`` was checked with
    (``minigate.gateway.plugins.loader.configure``); without them, the plugins its ``plugins`` section names are loaded
    here. ``worker``: this process is one of ``minigate serve --workers N`` (``minigate.gateway.supervisor``).
    """
    if extensions is None:
        extensions = builtin_extensions()
        if problems := extensions.load(config.plugins):
            raise ConfigError(problems)
    plugins = extensions
    web = WebState.create()
    web.announce = _announce(worker)
    web.templates.globals["plugin_links"] = extensions.links
    drain, gateway_metrics, refusals = Drain(), GatewayMetrics(), Refusals()
    redactor = redactor or Redactor()

    async def prepare(staged: Gateway) -> None:
        # Chains edited in the web UI stay in force: apply them to the new config before it is swapped in.
        web.base_configs[id(staged)] = staged.config
        try:
            await apply_stored_overrides(staged, web)
        finally:
            web.base_configs.pop(id(staged), None)
            web.applied.discard(id(staged))

    def adopt(gateway: Gateway, loaded: Config) -> None:
        web.base_configs[id(gateway)] = loaded  # later chain edits apply on top of the new config
        redactor.update(gateway.secrets())

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        gateway = await Gateway.open(config, plugins, drain=drain, metrics=gateway_metrics, refusals=refusals)
        # Chains edited in the web UI are kept in the database and apply from the first request on.
        await apply_stored_overrides(gateway, web)
        redactor.update(gateway.secrets())
        gateway.announce = _announce(worker)
        reloader = Reloader(gateway, config_path(config), prepare=prepare, adopt=adopt, announce=gateway.announce)
        app.state.gateway, app.state.reloader = gateway, reloader
        tasks = [asyncio.create_task(reloader.watch())]
        if worker is not None:
            tasks.append(asyncio.create_task(_publish_metrics(gateway, worker)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await gateway.close()
            await shutdown_plugins(plugins)

    v1 = Router("/v1", route_handlers=[*v1_handlers(), *responses_handlers(), *messages_handlers(), ws_chat])
    # Every state-changing request of the admin API (and of the config reload) is an admin action: recorded.
    admin_api = Router("/admin/api", route_handlers=[*admin_handlers(), *audit_handlers()], middleware=[audited("api")])
    reload = Router("/", route_handlers=[reload_handler], middleware=[audited("api")])
    # Workflow triggers, then plugins' own routes: kept out of the OpenAPI document, which describes the code's
    # own API; their bodies are the config's or a plugin's business, and a plugin's handler must not break it.
    extra = Router("/", route_handlers=[*workflow_routes(config), *extensions.routes], include_in_schema=False)
    app = Litestar(
        route_handlers=[v1, admin_api, reload, health, ready, metrics, *web_routes(web), extra],
        dependencies={
            "gateway": Provide(_gateway, sync_to_thread=False),
            "reloader": Provide(_reloader, sync_to_thread=False),
        },
        exception_handlers=exception_handlers(),
        lifespan=[lifespan],
        request_max_body_size=config.server.max_body_bytes,
        openapi_config=openapi_config(_version()),
        logging_config=None,
    )
    app.state.drain, app.state.worker = drain, worker
    # Outside Litestar's own exception handling, so every response (404s and 500s too) gets a request id; the
    # body deadline inside it, so a slow upload's 408 is logged and counted like any other answer. Writes get
    # as long to make progress as the body got to arrive.
    timeout = config.server.body_timeout
    handler = write_deadline(body_deadline(root_probe(app.asgi_handler), timeout), timeout)
    app.asgi_handler = observe(handler, gateway_metrics, drain, access_line, refusals)
    return app

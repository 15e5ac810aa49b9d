"""The one place that builds the app: every route, dependency, exception handler and lifespan is named here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from gateway.admin import admin_handlers
from gateway.api import v1_handlers
from gateway.config import Config
from gateway.errors import exception_handlers
from gateway.runtime import Gateway
from providers.registry import ProviderRegistry, builtin_registry
from web import WebState, apply_stored_overrides, web_routes

__all__ = ["create_app"]

log = logging.getLogger("minigate")


def _gateway(state: State) -> Gateway:
    gateway: Gateway = state.gateway
    return gateway


@get("/health", include_in_schema=False)
async def health() -> Response[bytes]:
    """Liveness: the process answers."""
    return Response(b'{"status":"ok"}', media_type="application/json")


@get("/ready", include_in_schema=False)
async def ready(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Readiness: the database answers and the default chain has a deployment that is not cooling down."""
    checks: dict[str, Any] = {"database": await gateway.database.ping()}
    default = gateway.routes.resolve("default")
    if default is not None:
        checks["default_chain"] = any(gateway.health.cooling(d.ref) == 0 for d in default.chain)
    ok = all(checks.values())
    return Response(
        msgspec.json.encode({"status": "ready" if ok else "not ready", "checks": checks}),
        status_code=200 if ok else 503,
        media_type="application/json",
    )


def create_app(config: Config, registry: ProviderRegistry | None = None) -> Litestar:
    """Build the Litestar app for ``config``; the gateway's resources open and close with the app's lifespan."""
    registry = registry or builtin_registry()
    web = WebState.create()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        gateway = await Gateway.open(config, registry)
        # Chains edited in the web UI are kept in the database and apply from the first request on.
        await apply_stored_overrides(gateway, web)
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.close()

    v1 = Router("/v1", route_handlers=v1_handlers())
    admin_api = Router("/admin/api", route_handlers=admin_handlers(), include_in_schema=False)
    return Litestar(
        route_handlers=[v1, admin_api, health, ready, *web_routes(web)],
        dependencies={"gateway": Provide(_gateway, sync_to_thread=False)},
        exception_handlers=exception_handlers(),
        lifespan=[lifespan],
        request_max_body_size=config.server.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )

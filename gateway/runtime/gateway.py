"""The running gateway: config, providers, routes, health, storage, held together for one app's lifetime.

Built in the app's lifespan and kept on ``app.state.gateway``; handlers receive it by dependency injection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from minigate.gateway.config.schema import Config
from minigate.gateway.core.errors import AuthenticationFailed, GatewayError
from minigate.gateway.ops.drain import Drain
from minigate.gateway.ops.limits import Limits
from minigate.gateway.ops.logs import env_secrets
from minigate.gateway.ops.monitor import GatewayMetrics
from minigate.gateway.ops.refusals import Refusals
from minigate.gateway.plugins.loader import Extensions
from minigate.gateway.routing.cooldowns import HealthBook
from minigate.gateway.routing.routes import RouteTable
from minigate.gateway.runtime.jobs import JobBoard
from minigate.gateway.storage import (
    Database,
    JobStore,
    KeyStore,
    SharedCooldowns,
    SharedCounters,
    UsageWriter,
    open_database,
)
from minigate.gateway.storage.audit import AuditLog
from minigate.gateway.storage.responses import ResponseStore
from minigate.providers.base import ManagesModels, Provider, ProviderError
from minigate.providers.registry import ENGINE_HOST_ENV, ProviderContext, ProviderRegistry

__all__ = ["ADMIN_KEY_ENV", "Gateway", "ProviderSpec", "build_providers", "provider_specs"]

log = logging.getLogger("minigate")

ADMIN_KEY_ENV = "MINIGATE_ADMIN_KEY"


ProviderSpec = tuple[str, Any, ProviderContext]  # (type name, typed config section, context)


def provider_specs(config: Config) -> dict[str, ProviderSpec]:
    """What each configured provider is built from; two equal specs build equivalent providers."""
    defaults = config.default_agent
    resources = defaults.resources if defaults else None
    context = ProviderContext(
        base_dir=config.base_dir,
        data_dir=config.path(config.server.data_dir),
        cpu_threads=resources.cpu_threads if resources else None,
        gpu_memory=resources.gpu_memory if resources else None,
        engine_host=os.environ.get(ENGINE_HOST_ENV) or None,
    )
    return {name: (type_name, section, context) for name, (type_name, section) in config.providers.items()}


def build_providers(
    config: Config, registry: ProviderRegistry, reuse: dict[str, tuple[ProviderSpec, Provider]] | None = None
) -> tuple[dict[str, Provider], list[Provider]]:
    """One provider per configured section: ``(all of them, the newly built ones)``.

    A provider in ``reuse`` whose spec is unchanged is kept as it is, so a reload neither reconnects remote
    providers nor restarts local models whose section did not change.
    """
    providers: dict[str, Provider] = {}
    fresh: list[Provider] = []
    for name, spec in provider_specs(config).items():
        kept = (reuse or {}).get(name)
        if kept is not None and kept[0] == spec:
            providers[name] = kept[1]
            continue
        kind = registry.get(spec[0])
        assert kind is not None  # the config check refuses unknown types
        providers[name] = kind.factory(name, spec[1], spec[2])
        fresh.append(providers[name])
    return providers, fresh


async def start_providers(providers: list[Provider]) -> None:
    """Start ``providers``; if one fails, close those already started and raise its error."""
    started: list[Provider] = []
    try:
        for provider in providers:
            await provider.start()
            started.append(provider)
    except BaseException:
        await close_providers(started)
        raise


async def close_providers(providers: list[Provider]) -> None:
    """Close ``providers``; a failure is logged and does not stop the others from closing."""
    for provider in providers:
        try:
            await provider.close()
        except Exception:
            log.exception("provider %s failed to close", provider.name)


@dataclass(slots=True)
class Gateway:
    """Everything a request handler needs."""

    config: Config
    providers: dict[str, Provider]
    routes: RouteTable
    health: HealthBook
    database: Database
    usage: UsageWriter
    keys: KeyStore
    admin_key: str | None
    extensions: Extensions  # the loaded plugins and the provider and step types they registered
    cooldowns: SharedCooldowns | None = None  # cooldowns shared with the other replicas on the database
    drain: Drain = field(default_factory=Drain)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    specs: dict[str, ProviderSpec] = field(default_factory=dict)  # what each provider was built from
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    retiring: set[Provider] = field(default_factory=set)  # replaced by a reload, closed once unused
    _background: list[asyncio.Task[None]] = field(default_factory=list)
    responses: ResponseStore | None = None  # stored Responses API answers (set by ``open``)
    limits: Limits | None = None  # keys' rate limits and budgets over counters shared by replicas (set by ``open``)
    audit: AuditLog | None = None  # admin actions (set by ``open``)
    jobs: JobBoard | None = None  # admin jobs, kept in the database for every worker and replica (set by ``open``)
    refusals: Refusals = field(default_factory=Refusals)  # refused /v1 requests, coalesced into usage rows
    # Under ``serve --workers N``: tells the other worker processes to reload (they rebuild their routes then).
    announce: Callable[[], None] | None = None

    @classmethod
    async def open(
        cls,
        config: Config,
        extensions: Extensions,
        *,
        drain: Drain | None = None,
        metrics: GatewayMetrics | None = None,
        refusals: Refusals | None = None,
    ) -> Gateway:
        """Open the database (applying migrations), start the usage writer and every provider."""
        database = await open_database(config.database_url())
        usage = UsageWriter(database)
        await usage.start()
        providers, fresh = build_providers(config, extensions.providers)
        try:
            await start_providers(fresh)
        except BaseException:
            await usage.close()
            await database.close()
            raise
        routes = RouteTable(config, {name: p.models() for name, p in providers.items()})
        shared = SharedCooldowns(database)
        await shared.start()
        admin_key = os.environ.get(ADMIN_KEY_ENV) or None
        gateway = cls(
            config,
            providers,
            routes,
            HealthBook(config.router.cooldown, shared),
            database,
            usage,
            KeyStore(database),
            admin_key,
            extensions,
            shared,
            drain or Drain(),
            metrics or GatewayMetrics(),
            provider_specs(config),
        )
        gateway.responses = ResponseStore(database)
        gateway.audit = AuditLog(database)
        gateway.audit.start()
        gateway.jobs = JobBoard(JobStore(database))
        if refusals is not None:
            gateway.refusals = refusals
        gateway.refusals.start(usage, gateway.keys.user_of)
        counters = SharedCounters(database)
        await counters.start()
        gateway.limits = Limits(counters)
        gateway.drain.bind(asyncio.get_running_loop(), config.server.shutdown_grace)
        gateway._background.append(asyncio.create_task(gateway._flush_key_use()))
        await gateway.preload_default()
        return gateway

    def provider_type(self, provider: str) -> str | None:
        """The registered type of a configured provider, by its own name (a plugin's type may reuse a built-in
        provider class)."""
        section = self.config.providers.get(provider)
        kind = self.extensions.providers.get(section[0]) if section is not None else None
        return kind.name if kind is not None else None

    def secrets(self) -> list[str]:
        """Every secret this gateway holds: provider credentials and headers, the admin key and password."""
        found = [secret for provider in self.providers.values() for secret in provider.secrets()]
        return found + env_secrets()

    async def preload_default(self) -> None:
        """Load the local models of the default chain, so its first request does not wait for them."""
        # The first request to the default agent should not pay for starting its local model.
        default = self.routes.resolve("default")
        for deployment in default.chain if default else ():
            provider = self.providers.get(deployment.provider)
            if isinstance(provider, ManagesModels) and deployment.model in provider.models():
                try:
                    await provider.load(deployment.model)
                except ProviderError as err:
                    log.warning("could not preload %s: %s", deployment.ref, err.message)

    async def _flush_key_use(self, every: float = 30.0) -> None:
        # Writing last_used_at per request would cost a write on the hot path; once in a while is enough.
        while True:
            await asyncio.sleep(every)
            try:
                await self.keys.flush_last_used()
            except Exception:
                log.exception("could not store when keys were last used")

    def refresh_routes(self) -> None:
        """Rebuild the route table from ``config`` and what the providers list now (after a pull or delete)."""
        self.routes = RouteTable(self.config, {name: p.models() for name, p in self.providers.items()})
        if self.announce is not None:  # a pulled, imported or deleted model: the other workers' lists change too
            self.announce()

    async def close(self) -> None:
        """Stop jobs and providers, then flush usage rows and close the database."""
        if self.jobs is not None:
            await self.jobs.close()
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.keys.flush_last_used()
        await close_providers([*self.providers.values(), *self.retiring])
        self.retiring.clear()
        if self.cooldowns is not None:
            await self.cooldowns.close()
        if self.responses is not None:
            await self.responses.close()
        if self.limits is not None:
            await self.limits.counters.close()
        if self.audit is not None:
            await self.audit.close()
        await self.refusals.close()  # before the usage writer: its rows go through it
        await self.usage.close()
        await self.database.close()

    async def identify(self, authorization: str | None) -> tuple[int | None, bool]:
        """``(key id, admin)`` for an ``Authorization: Bearer`` header; the bootstrap key is ``(None, True)``."""
        if not authorization or authorization[:7].lower() != "bearer ":
            raise AuthenticationFailed()
        # Only HTTP's own blanks: str.strip() would also drop Unicode spaces (U+00A0, U+0085, U+3000, ...), so a
        # look-alike such as the key plus a no-break space would pass as the key.
        token = authorization[7:].strip(" \t")
        if self.admin_key and hmac.compare_digest(token.encode("utf-8", "replace"), self.admin_key.encode()):
            return None, True
        identity = await self.keys.identify(token)
        if identity is None:
            if (ended := self.keys.expired(token)) is not None:
                raise AuthenticationFailed(
                    f"This API key expired on {datetime.fromtimestamp(ended, UTC):%Y-%m-%d %H:%M} UTC."
                )
            raise AuthenticationFailed()
        return identity

    async def authenticate(self, authorization: str | None) -> int | None:
        """The key id for an ``Authorization: Bearer`` header (None for the bootstrap admin key); else 401."""
        return (await self.identify(authorization))[0]

    async def authenticate_admin(self, authorization: str | None) -> int | None:
        """Like :meth:`authenticate`, but only admin keys pass (403 for the others)."""
        key_id, admin = await self.identify(authorization)
        if not admin:
            raise GatewayError(
                "This key may not use the admin API.", status=403, type="permission_error", code="admin_required"
            )
        return key_id

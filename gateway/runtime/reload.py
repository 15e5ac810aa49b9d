"""Changing the configuration without a restart: ``POST /admin/reload`` and a watcher of the config file.

A new config is checked whole, built beside the running one and swapped in one step, so every request runs
wholly on one of them (docs/architecture.md, "Shutdown and reload").
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency

from minigate.gateway.config.schema import Config, ConfigError
from minigate.gateway.core.errors import error_body
from minigate.gateway.plugins.loader import configure_file
from minigate.gateway.routing.cooldowns import HealthBook
from minigate.gateway.routing.routes import RouteTable
from minigate.gateway.runtime.gateway import Gateway, build_providers, close_providers, provider_specs, start_providers

__all__ = ["ReloadResult", "Reloader", "config_path", "reload_handler"]

log = logging.getLogger("minigate")

# ServerConfig fields the running process cannot change: what uvicorn listens on, the open database.
_RESTART_ONLY = (
    "host", "port", "data_dir", "database_url", "max_body_bytes", "body_timeout", "trusted_proxies", "workers",
)  # fmt: skip


@dataclass(slots=True)
class ReloadResult:
    """What a reload did: ``ok``, or refused with ``issues`` (``path: message`` lines)."""

    ok: bool
    source: str
    issues: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)
    providers: dict[str, list[str]] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        """The answer of ``POST /admin/reload`` when it succeeded."""
        return {
            "status": "reloaded",
            "source": self.source,
            "providers": self.providers,
            "restart_required": self.restart_required,
        }


def _keep_running_server(running: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the startup-only server settings of ``running``, and a line for each that differed."""
    notes = []
    for key in _RESTART_ONLY:
        before, after = getattr(running.server, key), getattr(new.server, key)
        if before != after:
            notes.append(f"server.{key}: {before!r} -> {after!r} needs a restart (the running value stays)")
    if not notes and running.database_url() != new.database_url():
        notes.append("the database location changed (the config file moved?): needs a restart")
    kept = {key: getattr(running.server, key) for key in _RESTART_ONLY}
    server = msgspec.structs.replace(new.server, **kept)
    return msgspec.structs.replace(new, server=server, base_dir=running.base_dir), notes


class Reloader:
    """Reloads one gateway's configuration from ``path``; ``prepare`` and ``adopt`` keep web overrides."""

    def __init__(
        self,
        gateway: Gateway,
        path: str | None,
        *,
        prepare: Callable[[Gateway], Awaitable[None]] | None = None,
        adopt: Callable[[Gateway, Config], None] | None = None,
        announce: Callable[[], None] | None = None,
    ) -> None:
        """``announce``: called after a reload asked of this process alone (``POST /admin/reload``), so that the
        other processes of ``serve --workers N`` reload too."""
        self.gateway = gateway
        self._announce = announce
        self.path = path
        self._prepare = prepare
        self._adopt = adopt
        self._seen = self._signature()

    def _signature(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    async def reload(self, source: str) -> ReloadResult:
        """Read, check and apply the config file; never raises for a bad config (see ``ReloadResult``)."""
        gateway = self.gateway
        async with gateway.reload_lock:
            self._seen = self._signature()
            if self.path is None and source != "signal":
                issue = "the gateway was started without a config file (built-in default): nothing to reload"
                return self._rejected(source, [issue])
            try:  # no file (built-in default) and SIGHUP: the running config again, for the model lists and chains
                loaded = gateway.config if self.path is None else configure_file(self.path, gateway.extensions)
            except ConfigError as err:
                return self._rejected(source, str(err).splitlines())
            running = gateway.config
            config, notes = _keep_running_server(running, loaded)
            try:
                result = await self._swap(config, source)
            except Exception as err:  # a provider that cannot start (bad local folder, ...)
                log.exception("config reload failed while starting providers")
                return self._rejected(source, [f"starting the new providers failed: {err}"])
            result.restart_required = notes
        log.info(
            "config reloaded (%s)",
            source,
            extra={"event": "config_reload", "result": "ok", "source": source, **result.view()},
        )
        gateway.metrics.reloads.inc(("ok",))
        if source == "admin" and self._announce is not None:
            self._announce()
        return result

    def _rejected(self, source: str, issues: list[str]) -> ReloadResult:
        log.error(
            "config reload refused (%s); the running configuration keeps serving:\n  %s",
            source,
            "\n  ".join(issues),
            extra={"event": "config_reload", "result": "rejected", "source": source, "issues": issues},
        )
        self.gateway.metrics.reloads.inc(("rejected",))
        return ReloadResult(False, source, issues=issues)

    async def _swap(self, config: Config, source: str) -> ReloadResult:
        gateway = self.gateway
        old = gateway.providers
        reuse = {name: (gateway.specs[name], p) for name, p in old.items() if name in gateway.specs}
        providers, fresh = build_providers(config, gateway.extensions.providers, reuse)
        await start_providers(fresh)
        routes = RouteTable(config, {name: p.models() for name, p in providers.items()})
        staged = replace(gateway, config=config, providers=providers, routes=routes)
        try:
            if self._prepare is not None:
                await self._prepare(staged)  # chain overrides: staged.config/routes with them applied
        except BaseException:
            await close_providers(fresh)
            raise
        # The swap itself: no await from here to the end of the block.
        gateway.config, gateway.routes, gateway.providers = staged.config, staged.routes, providers
        gateway.health = HealthBook(config.router.cooldown, gateway.cooldowns, gateway.health.load)  # calls in flight
        gateway.specs = provider_specs(config)
        gateway.drain.grace = config.server.shutdown_grace
        if self._adopt is not None:
            self._adopt(gateway, config)
        logging.getLogger().setLevel(config.server.log_level.upper())
        retired = [p for name, p in old.items() if providers.get(name) is not p]
        if retired:
            gateway.retiring.update(retired)
            self._background(self._retire(old, retired, running_timeout=config.router.timeout))
        if fresh:
            self._background(gateway.preload_default())
        return ReloadResult(
            True,
            source,
            providers={
                "added": sorted(n for n in providers if n not in old),
                "replaced": sorted(n for n in providers if n in old and old[n] is not providers[n]),
                "removed": sorted(n for n in old if n not in providers),
                "kept": sorted(n for n in providers if old.get(n) is providers[n]),
            },
        )

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.gateway._background.append(task)
        task.add_done_callback(self.gateway._background.remove)

    async def _retire(self, old: dict[str, Any], retired: list[Any], running_timeout: float) -> None:
        """Close replaced providers once no call in flight uses the old set (at most one request deadline)."""
        gateway = self.gateway
        if not await gateway.drain.wait_unused(old, running_timeout + 5):
            log.warning("closing replaced providers with calls still in flight (past their deadline)")
        gateway.retiring.difference_update(retired)
        await close_providers(retired)

    async def watch(self, every: float = 1.0) -> None:
        """Poll the config file's mtime, size and inode every ``every`` s; reload when they change."""
        if self.path is None:
            return
        missing = False
        while True:
            await asyncio.sleep(every)
            seen = self._signature()
            if seen is None:
                if not missing:
                    log.warning("config file %s cannot be read; the running configuration stays", self.path)
                missing = True
                continue
            missing = False
            if seen != self._seen:
                try:
                    await self.reload("file")
                except Exception:  # a bug in a reload must not end the watching
                    log.exception("config reload from the watched file failed")


@post("/admin/reload", status_code=200)
async def reload_handler(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], reloader: NamedDependency[Reloader]
) -> Response[bytes]:
    """Reload the config file now (admin key): 200 with what changed, or 400 with every problem found."""
    await gateway.authenticate_admin(request.headers.get("authorization"))
    result = await reloader.reload("admin")
    if result.ok:
        return Response(msgspec.json.encode(result.view()), media_type="application/json")
    message = "The configuration was refused; the running one keeps serving:\n" + "\n".join(result.issues)
    body = {**error_body(message, "invalid_request_error", None, "invalid_config"), "issues": result.issues}
    return Response(msgspec.json.encode(body), status_code=400, media_type="application/json")


def config_path(config: Config) -> str | None:
    """The file a config was read from, absolute (None for the built-in default)."""
    return str(Path(config.source).resolve()) if config.source else None

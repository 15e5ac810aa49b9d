"""Plugins: loaded from entry points (group ``minigate.plugins``) or modules in config; their ``process`` pipeline.

The hooks and what they are given are specified in :mod:`gateway.hookspecs`; isolation and ``on_error`` are in
docs/architecture.md, "Plugins".
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from gateway.errors import GatewayError
from gateway.hookspecs import HOOKS, Event, PluginAPI, Rejected, UILink, hook_problem
from gateway.workflow_steps import StepRegistry
from providers.base import ProviderError
from providers.registry import ProviderRegistry

if TYPE_CHECKING:
    from gateway.chain import Hop
    from gateway.proxy import Call
    from gateway.routing import Deployment

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "Event",
    "Extensions",
    "Pipeline",
    "Plugin",
    "PluginAPI",
    "PluginSettings",
    "PluginsConfig",
    "Rejected",
    "UILink",
    "extensions_of",
    "plugin_hooks",
    "shutdown_plugins",
]

log = logging.getLogger("minigate.plugins")

ENTRY_POINT_GROUP = "minigate.plugins"
BUILTIN_PLUGINS = {"builtin-providers": "providers.builtins", "builtin-steps": "gateway.workflow_steps"}

Policy = Literal["reject", "skip"]


class PluginSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``plugins.settings.NAME``: whether the plugin loads, what its failures do, and its own options."""

    enabled: bool = True
    on_error: Policy | None = None  # None: plugins.on_error
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class PluginsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``plugins`` config section."""

    modules: list[str] = msgspec.field(default_factory=list)  # "package.module" or "package.module:Class"
    entry_points: bool = True  # load every installed package's minigate.plugins entry points
    on_error: Policy = "reject"
    settings: dict[str, PluginSettings] = msgspec.field(default_factory=dict)


@dataclass(slots=True)
class Plugin:
    """A loaded plugin: where it came from, its failure policy and its hooks."""

    name: str
    source: str
    policy: Policy
    process: Callable[[Event], Any] | None = None
    shutdown: Callable[[], Any] | None = None


def _provider_type(call: Call, deployment: Deployment) -> str | None:
    # The registered type's own name, as configured (a plugin's type may reuse a built-in provider class).
    section = call.gateway.config.providers.get(deployment.provider)
    kind = call.gateway.registry.get(section[0]) if section is not None else None
    return kind.name if kind is not None else None


class _Refusal(Exception):
    def __init__(self, message: str, status: int, code: str, failed: bool) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.failed = message, status, code, failed
        self.type = "server_error" if failed else ("invalid_request_error" if status < 500 else "server_error")


class Pipeline:
    """The ``process`` hooks of the loaded plugins, in load order, and how each stage answers a refusal."""

    def __init__(self, plugins: list[Plugin]) -> None:
        self._hooks = [(p.name, p.process, p.policy) for p in plugins if p.process is not None]
        self._logged: dict[tuple[str, str], float] = {}

    def _run(self, event: Event) -> dict[str, Any]:
        for name, hook, policy in self._hooks:
            try:
                hook(event)
            except Rejected as err:
                raise _Refusal(f"Plugin {name!r} refused this: {err.message}", err.status, err.code, False) from None
            except Exception as err:
                if policy == "skip":
                    self._log_skipped(name, event.stage)
                    continue
                log.exception("plugin %s failed in process (%s); the request is refused", name, event.stage)
                message = f"Plugin {name!r} failed ({type(err).__name__}); the gateway log has the details."
                raise _Refusal(message, 500, "plugin_error", True) from None
        return event.body

    def _log_skipped(self, name: str, stage: str) -> None:
        # A hook failing on every chunk must not flood the log: the first failure with its traceback, then a
        # line a minute at most.
        now, key = time.monotonic(), (name, stage)
        if now - self._logged.get(key, -120.0) >= 60.0:
            log.exception("plugin %s failed in process (%s); skipped as configured", name, stage)
            self._logged[key] = now

    def request(self, endpoint: str, parsed: Any, raw: dict[str, Any], key_id: int | None, request_id: Any) -> Any:
        """Before routing: let the plugins change ``raw`` in place (model included); the re-checked request."""
        event = Event("request", endpoint, raw, request_id, key_id)
        try:
            body = self._run(event)
        except _Refusal as err:
            raise GatewayError(err.message, status=err.status, type=err.type, code=err.code) from None
        if body is not raw:
            raw.clear()
            raw.update(body)
        try:
            return msgspec.convert(raw, type(parsed))
        except msgspec.ValidationError as err:
            log.error("a plugin made the request invalid: %s", err)
            message = f"A plugin made the request invalid: {err}."
            raise GatewayError(message, status=500, type="server_error", code="plugin_error") from None

    def upstream(self, call: Call, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        """What leaves for ``deployment``; a refusal moves on to the next deployment, a failure ends the chain."""
        kind = _provider_type(call, deployment)
        event = Event("upstream", call.endpoint, body, call.request_id, call.key_id, deployment.ref, kind)
        try:
            return self._run(event)
        except _Refusal as err:
            raise ProviderError(
                err.message, status=err.status, type=err.type, code=err.code, fallback=not err.failed, cooldown=False
            ) from None

    async def response(
        self, call: Call, deployment: Deployment, hops: list[Hop], body: dict[str, Any]
    ) -> dict[str, Any]:
        """A JSON answer before it is sent; a refusal is stored as the call's usage row and answered."""
        kind = _provider_type(call, deployment)
        event = Event("response", call.endpoint, body, call.request_id, call.key_id, deployment.ref, kind)
        try:
            return self._run(event)
        except _Refusal as err:
            await call.store(err.status, deployment, hops, error=err.message, usage=body.get("usage"))
            raise GatewayError(err.message, status=err.status, type=err.type, code=err.code) from None

    def chunk(self, call: Call, deployment: Deployment, chunk: dict[str, Any]) -> dict[str, Any]:
        """A stream chunk before it is sent; a refusal ends the stream with an error event."""
        kind = _provider_type(call, deployment)
        event = Event("chunk", call.endpoint, chunk, call.request_id, call.key_id, deployment.ref, kind)
        try:
            return self._run(event)
        except _Refusal as err:
            raise ProviderError(err.message, status=err.status, type=err.type, code=err.code, cooldown=False) from None


@dataclass(slots=True)
class Extensions(ProviderRegistry):
    """The provider registry together with everything else plugins extend: step types, routes, UI links, the
    loaded plugins and their ``process`` pipeline. A config is checked against it (``gateway.config``)."""

    steps: StepRegistry = field(default_factory=StepRegistry)
    plugins: list[Plugin] = field(default_factory=list)
    routes: list[Any] = field(default_factory=list)
    links: list[UILink] = field(default_factory=list)
    pipeline: Pipeline | None = None  # None while no plugin has a process hook: the request path skips it
    loaded: PluginsConfig | None = None  # the section third-party plugins were loaded from (once)

    @classmethod
    def builtin(cls) -> Extensions:
        """The built-in plugins only, loaded through the plugin hooks like any other."""
        extensions = cls()
        for name, path in BUILTIN_PLUGINS.items():
            problem = extensions._add(name, "built in", importlib.import_module(path), {}, "reject")
            if problem is not None:
                raise RuntimeError(problem)  # a bug in minigate, not a configuration problem
        return extensions

    def load(self, section: PluginsConfig) -> list[tuple[str, str]]:
        """Load the plugins ``section`` names, once; ``(path, problem)`` for each that failed and may not be left out.

        Entry points load first (sorted by name), then ``modules`` in order. Plugins load only at startup: a
        later call (a config reload) with a different section is logged as needing a restart.
        """
        if self.loaded is not None:
            if section != self.loaded:
                log.warning("the plugins section changed; plugins load only at startup, so restart to apply it")
            return []
        self.loaded = section
        issues: list[tuple[str, str]] = []
        candidates: list[tuple[str, str, str, Callable[[], Any]]] = []  # name, source, config path, loader
        if section.entry_points:
            for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown package"
                candidates.append((ep.name, f"entry point {ep.name!r} ({dist})", "plugins", ep.load))
        for i, spec in enumerate(section.modules):
            module, _, attr = spec.partition(":")
            name = module.rsplit(".", 1)[-1]
            candidates.append((name, f"module {spec!r}", f"plugins.modules[{i}]", _importer(module, attr)))
        for name, source, path, loader in candidates:
            settings = section.settings.get(name) or PluginSettings()
            if not settings.enabled:
                continue
            policy = settings.on_error or section.on_error
            problem: str | None
            try:
                target = loader()
                if inspect.isclass(target):
                    target = target()
            except Exception as err:
                problem = f"{source} could not be loaded: {type(err).__name__}: {err}"
            else:
                problem = self._add(name, source, target, settings.options, policy)
            if problem is not None:
                self._failed(path, name, problem, policy, issues)
        found = {c[0] for c in candidates}
        for name, settings in section.settings.items():
            if settings.enabled and name not in found:
                issues.append((f"plugins.settings.{name}", "no plugin of that name is installed or in plugins.modules"))
        return issues

    @staticmethod
    def _failed(path: str, name: str, problem: str, policy: Policy, issues: list[tuple[str, str]]) -> None:
        if policy == "skip":
            log.error("plugin %s left out (on_error: skip): %s", name, problem)
            return
        leave_out = (
            f"set plugins.settings.{name}.enabled: false" if path == "plugins" else "remove it from plugins.modules"
        )
        hint = f"{leave_out}, or set plugins.settings.{name}.on_error: 'skip', to start without it"
        issues.append((path, f"{problem} ({hint})"))

    def _add(self, name: str, source: str, target: Any, options: dict[str, Any], policy: Policy) -> str | None:
        """Run ``target``'s init hook and keep what it registered; the problem if it failed or clashed."""
        if any(p.name == name for p in self.plugins):
            return f"{source}: a plugin named {name!r} is already loaded"
        init = getattr(target, "init", None)
        api = PluginAPI(name, options)
        if init is not None:
            if (problem := hook_problem("init", init)) is not None:
                return f"{source}: {problem}"
            try:
                init(api)
            except Exception as err:
                return f"plugin {name!r} ({source}) failed in init: {type(err).__name__}: {err}"
        # Read after init: a class plugin may set its process hook to None when its options leave nothing to do,
        # and the request path then stays free of it. Each hook is checked against its spec in gateway.hookspecs.
        hooks = {hook: getattr(target, hook, None) for hook in HOOKS if hook != "init"}
        for hook, fn in hooks.items():
            if fn is not None and (problem := hook_problem(hook, fn)) is not None:
                return f"{source}: {problem}"
        clashes = [f"provider type {t!r}" for t in api.providers.types if t in self.types]
        clashes += [f"step type {s!r}" for s in api.steps.types if s in self.steps.types]
        if clashes:
            return f"plugin {name!r} ({source}) registers {', '.join(clashes)}, which another plugin registered first"
        self.types.update(api.providers.types)
        self.steps.types.update(api.steps.types)
        self.routes.extend(api.routes)
        self.links.extend(api.links)
        self.plugins.append(Plugin(name, source, policy, hooks["process"], hooks["shutdown"]))
        if hooks["process"] is not None:
            self.pipeline = Pipeline(self.plugins)
        log.debug("plugin %s loaded (%s)", name, source)
        return None


def _importer(module: str, attr: str) -> Callable[[], Any]:
    def load() -> Any:
        target = importlib.import_module(module)
        return getattr(target, attr) if attr else target

    return load


def extensions_of(registry: ProviderRegistry) -> Extensions:
    """``registry`` as :class:`Extensions` (an empty one, with no plugins, for a plain provider registry)."""
    return registry if isinstance(registry, Extensions) else Extensions()


def plugin_hooks(registry: ProviderRegistry) -> Pipeline | None:
    """The ``process`` pipeline of the plugins behind ``registry``; None when no plugin has a process hook."""
    return registry.pipeline if isinstance(registry, Extensions) else None


async def shutdown_plugins(registry: ProviderRegistry, each: float = 5.0) -> None:
    """Call every plugin's shutdown hook, last loaded first; each failure is logged, none stops the others."""
    if not isinstance(registry, Extensions):
        return
    for plugin in reversed(registry.plugins):
        if plugin.shutdown is None:
            continue
        try:
            result = plugin.shutdown()
            if inspect.isawaitable(result):
                async with asyncio.timeout(each):
                    await result
        except Exception:
            log.exception("plugin %s failed in shutdown", plugin.name)

"""Plugins: loaded from entry points (group ``minigate.plugins``) or modules in config; their ``process`` pipeline.

The hooks and what they are given are specified in :mod:`minigate.gateway.plugins.hookspecs`; isolation and ``on_error``
are in docs/architecture.md, "Plugins".
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack

import msgspec

from minigate.gateway.config.schema import Config, ConfigError, parse_config, plugins_section, read_json
from minigate.gateway.config.sections import PluginsConfig, PluginSettings, Policy
from minigate.gateway.config.workflow_steps import StepRegistry
from minigate.gateway.core.errors import GatewayError
from minigate.gateway.plugins.hookspecs import HOOKS, Event, PluginAPI, Rejected, UILink, hook_problem
from minigate.providers.base import ProviderError
from minigate.providers.registry import ProviderRegistry

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "Event",
    "Extensions",
    "Origin",
    "Pipeline",
    "Plugin",
    "PluginAPI",
    "Rejected",
    "Target",
    "UILink",
    "builtin_extensions",
    "configure",
    "configure_file",
    "plugin_hooks",
    "shutdown_plugins",
]

log = logging.getLogger("minigate.plugins")

ENTRY_POINT_GROUP = "minigate.plugins"
BUILTIN_PLUGINS = {
    "builtin-providers": "minigate.providers.builtins",
    "builtin-steps": "minigate.gateway.plugins.builtin_steps",
}


@dataclass(slots=True)
class Plugin:
    """A loaded plugin: where it came from, its failure policy and its hooks."""

    name: str
    source: str
    policy: Policy
    process: Callable[[Event], Any] | None = None
    shutdown: Callable[[], Any] | None = None


class Target(Protocol):
    """The deployment a hook is told of (``minigate.gateway.routing.routes.Deployment`` is one)."""

    @property
    def provider(self) -> str: ...

    @property
    def ref(self) -> str: ...


class Origin(Protocol):
    """What the hooks read of a call, and how a refused answer is stored (``minigate.gateway.serving.proxy.Call`` is
    one)."""

    @property
    def endpoint(self) -> str: ...

    @property
    def request_id(self) -> str: ...

    @property
    def key_id(self) -> int | None: ...

    def provider_type(self, provider: str) -> str | None:
        """The registered type of the provider named ``provider``."""
        ...

    async def store(
        self,
        status: int,
        deployment: Any,
        hops: list[Any],
        *,
        error: str | None = None,
        ttft_ms: float | None = None,
        usage: Any = None,
    ) -> None:
        """Commit the call's usage row."""
        ...


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

    def upstream(self, call: Origin, deployment: Target, body: dict[str, Any]) -> dict[str, Any]:
        """What leaves for ``deployment``; a refusal moves on to the next deployment, a failure ends the chain."""
        kind = call.provider_type(deployment.provider)
        event = Event("upstream", call.endpoint, body, call.request_id, call.key_id, deployment.ref, kind)
        try:
            return self._run(event)
        except _Refusal as err:
            raise ProviderError(
                err.message, status=err.status, type=err.type, code=err.code, fallback=not err.failed, cooldown=False
            ) from None

    async def response(self, call: Origin, deployment: Target, hops: list[Any], body: dict[str, Any]) -> dict[str, Any]:
        """A JSON answer before it is sent; a refusal is stored as the call's usage row and answered."""
        kind = call.provider_type(deployment.provider)
        event = Event("response", call.endpoint, body, call.request_id, call.key_id, deployment.ref, kind)
        try:
            return self._run(event)
        except _Refusal as err:
            await call.store(err.status, deployment, hops, error=err.message, usage=body.get("usage"))
            raise GatewayError(err.message, status=err.status, type=err.type, code=err.code) from None

    def chunk(self, call: Origin, deployment: Target, chunk: dict[str, Any]) -> dict[str, Any]:
        """A stream chunk before it is sent; a refusal ends the stream with an error event."""
        kind = call.provider_type(deployment.provider)
        event = Event("chunk", call.endpoint, chunk, call.request_id, call.key_id, deployment.ref, kind)
        try:
            return self._run(event)
        except _Refusal as err:
            raise ProviderError(err.message, status=err.status, type=err.type, code=err.code, cooldown=False) from None


@dataclass(slots=True)
class Extensions:
    """What plugins extend: the provider registry, step types, routes, UI links; the loaded plugins and their
    ``process`` pipeline. A config is checked against its registries (``minigate.gateway.config.schema``)."""

    providers: ProviderRegistry = field(default_factory=ProviderRegistry)
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
        # and the request path then stays free of it. Each hook is checked against its spec in
        # minigate.gateway.plugins.hookspecs.
        hooks = {hook: getattr(target, hook, None) for hook in HOOKS if hook != "init"}
        for hook, fn in hooks.items():
            if fn is not None and (problem := hook_problem(hook, fn)) is not None:
                return f"{source}: {problem}"
        clashes = [f"provider type {t!r}" for t in api.providers.types if t in self.providers.types]
        clashes += [f"step type {s!r}" for s in api.steps.types if s in self.steps.types]
        if clashes:
            return f"plugin {name!r} ({source}) registers {', '.join(clashes)}, which another plugin registered first"
        self.providers.types.update(api.providers.types)
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


def plugin_hooks(extensions: Extensions) -> Pipeline | None:
    """The ``process`` pipeline of the loaded plugins; None when no plugin has a process hook."""
    return extensions.pipeline


async def shutdown_plugins(extensions: Extensions, each: float = 5.0) -> None:
    """Call every plugin's shutdown hook, last loaded first; each failure is logged, none stops the others."""
    for plugin in reversed(extensions.plugins):
        if plugin.shutdown is None:
            continue
        try:
            result = plugin.shutdown()
            if inspect.isawaitable(result):
                async with asyncio.timeout(each):
                    await result
        except Exception:
            log.exception("plugin %s failed in shutdown", plugin.name)


def builtin_extensions() -> Extensions:
    """The built-in provider types and workflow steps, registered through the plugins' ``init`` hook exactly as a
    third-party plugin registers its own; :func:`configure` loads the others."""
    return Extensions.builtin()


class Place(TypedDict, total=False):
    """Where a config came from, as :func:`minigate.gateway.config.schema.parse_config` takes it."""

    base_dir: Path | None
    source: str | None


def configure(
    raw: Any, extensions: Extensions, *, env: Mapping[str, str] | None = None, **place: Unpack[Place]
) -> Config:
    """Load the plugins ``raw``'s ``plugins`` section names into ``extensions`` (once: at startup), then check
    ``raw`` against the provider and step types they registered; :class:`ConfigError` lists every problem."""
    issues = extensions.load(plugins_section(raw, os.environ if env is None else env))
    try:
        config = parse_config(raw, extensions, env=env, **place)
    except ConfigError as err:
        raise ConfigError([*issues, *err.issues]) from None
    if issues:
        raise ConfigError(issues)
    return config


def configure_file(
    path: str | os.PathLike[str] | None, extensions: Extensions, *, default: dict[str, Any] | None = None
) -> Config:
    """:func:`configure` for a config file; with no path, for ``default`` (the built-in configuration)."""
    if path is None:
        return configure(default or {}, extensions)
    file = Path(path)
    return configure(read_json(file), extensions, base_dir=file.resolve().parent, source=str(file))

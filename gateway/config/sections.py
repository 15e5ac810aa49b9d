"""The config file's sections as typed structs: agents, models, router, server, plugins.

:mod:`minigate.gateway.config.schema` converts a whole file into them and checks what types cannot say.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "STRATEGIES",
    "AgentConfig",
    "AgentModel",
    "CooldownConfig",
    "GroupMember",
    "GroupSpec",
    "ModelsConfig",
    "PluginSettings",
    "PluginsConfig",
    "Policy",
    "Resources",
    "RouterConfig",
    "ServerConfig",
    "Strict",
]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


STRATEGIES = ("least_busy", "weighted", "latency")  # how a group orders its members (minigate.gateway.routing.groups)


class GroupMember(Strict):
    """A group's member with a weight: ``{"ref": "provider/model", "weight": 3}`` (strategy ``weighted``)."""

    ref: str
    weight: float = 1.0


class GroupSpec(Strict):
    """Deployments serving the same model, balanced by ``strategy``: ``least_busy`` (the default), ``weighted``
    (the default when a member has a weight) or ``latency``; checked in :mod:`minigate.gateway.config.schema`."""

    group: list[str | GroupMember]
    strategy: str | None = None

    def refs(self) -> list[str]:
        """The members' references, in order."""
        return [m if isinstance(m, str) else m.ref for m in self.group]

    def weights(self) -> dict[str, float]:
        """The weights given, by reference."""
        return {m.ref: m.weight for m in self.group if isinstance(m, GroupMember)}

    def kind(self) -> str:
        """The strategy in force."""
        return self.strategy or ("weighted" if self.weights() else "least_busy")


class AgentModel(Strict):
    """An agent's chain: ``primary`` then ``fallbacks`` (``fallback`` is the same, one entry or a list). An entry is
    a ``provider/model`` reference or a group of them (:class:`GroupSpec`)."""

    primary: str | GroupSpec
    fallbacks: list[str | GroupSpec] | None = None
    fallback: str | GroupSpec | list[str | GroupSpec] | None = None

    def entries(self) -> list[str | GroupSpec]:
        """The ordered entries of the chain."""
        extra = self.fallback if self.fallback is not None else (self.fallbacks or [])
        return [self.primary, *(extra if isinstance(extra, list) else [extra])]

    def chain(self) -> list[str]:
        """The ordered model references of the chain, a group's members in its place."""
        return [ref for e in self.entries() for ref in ([e] if isinstance(e, str) else e.refs())]

    def grouped(self) -> bool:
        """Whether the chain holds a group."""
        return not all(isinstance(e, str) for e in self.entries())


class Resources(Strict):
    """Machine resources for the local models an agent uses (:mod:`minigate.gateway.config.resources`):
    ``gpu_memory`` as ``"80%"`` or bytes, ``cpu_threads`` > 0, ``preallocate_memory`` to size KV caches up front."""

    gpu_memory: str | int | None = None
    cpu_threads: int | None = None
    preallocate_memory: bool | None = None


class AgentConfig(Strict):
    """A virtual model: requests naming the agent follow its chain.

    ``private``: its chain may hold only deployments whose requests stay on this machine (checked at startup).
    ``capability_fallback``: a deployment that cannot do what was asked (images, logprobs...) may hand the
    request on to a remote deployment; without it the client gets that deployment's 400.
    """

    model: AgentModel
    resources: Resources | None = None
    description: str | None = None
    private: bool = False
    capability_fallback: bool = False


class ModelsConfig(Strict):
    """``models``: provider sections (typed later by their provider type), aliases, and prices per million tokens."""

    providers: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    aliases: dict[str, str] = msgspec.field(default_factory=dict)
    prices: dict[str, Any] = msgspec.field(default_factory=dict)  # checked by minigate.gateway.config.prices


class CooldownConfig(Strict):
    """A deployment failing ``failures`` times in a row cools down ``initial`` s, doubling up to ``max`` s."""

    failures: int = 3
    initial: float = 5.0
    max: float = 300.0


class RouterConfig(Strict):
    """Routing policy: one deadline per request, what unknown model names do, cooldowns."""

    timeout: float = 600.0
    unknown_model: Literal["error", "default"] = "error"
    cooldown: CooldownConfig = msgspec.field(default_factory=CooldownConfig)


class ServerConfig(Strict):
    """Where to listen and where to keep data. Relative paths are taken from the config file's folder."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./data"
    database_url: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    body_timeout: float = 30.0  # seconds for a request's headers, then for its whole body, to arrive (else 408)
    shutdown_grace: float = 30.0  # seconds open calls get to finish after SIGTERM
    # Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed; none by default,
    # so a client cannot pick the address it is throttled under by sending the header itself.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Gateway processes on the port (``minigate serve --workers``); None: one per core, at most 4.
    workers: int | None = None


Policy = Literal["reject", "skip"]


class PluginSettings(Strict):
    """``plugins.settings.NAME``: whether the plugin loads, what its failures do, and its own options."""

    enabled: bool = True
    on_error: Policy | None = None  # None: plugins.on_error
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class PluginsConfig(Strict):
    """The ``plugins`` config section: which plugins ``minigate.gateway.plugins.loader`` loads, and how their failures
    count."""

    modules: list[str] = msgspec.field(default_factory=list)  # "package.module" or "package.module:Class"
    entry_points: bool = True  # load every installed package's minigate.plugins entry points
    on_error: Policy = "reject"
    settings: dict[str, PluginSettings] = msgspec.field(default_factory=dict)

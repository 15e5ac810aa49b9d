"""Provider types register here, built-in ones exactly like plugins' ones.

A :class:`ProviderType` names a ``type`` value of the config, the msgspec struct its section converts to, a
``check`` for what types cannot say (URLs, ranges), and a factory that builds the :class:`Provider`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from providers.base import Provider

__all__ = ["ProviderContext", "ProviderRegistry", "ProviderType", "builtin_registry", "check_endpoint"]


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What a provider factory may know of the gateway: its folders and the machine resources to use."""

    base_dir: Path
    data_dir: Path
    cpu_threads: int | None = None
    gpu_memory: str | int | None = None


@dataclass(frozen=True, slots=True)
class ProviderType:
    """One ``type`` of provider section: its config struct, extra checks and factory."""

    name: str
    config_type: type[Any]
    factory: Callable[[str, Any, ProviderContext], Provider]
    checker: Callable[[Any], Iterable[tuple[str, str]]] | None = None

    def check(self, config: Any) -> list[tuple[str, str]]:
        """``(sub-path, message)`` for each problem in a converted section."""
        return list(self.checker(config)) if self.checker else []


@dataclass(slots=True)
class ProviderRegistry:
    """Provider types by name; built by :func:`builtin_registry`, extended by plugins."""

    types: dict[str, ProviderType] = field(default_factory=dict)

    def register(self, kind: ProviderType, *aliases: str) -> None:
        """Add a provider type under its name and any aliases."""
        for name in (kind.name, *aliases):
            self.types[name] = kind

    def get(self, name: str) -> ProviderType | None:
        """The type registered under ``name``, if any."""
        return self.types.get(name)

    def names(self) -> list[str]:
        """Every registered type name, sorted."""
        return sorted(self.types)


_BLOCKED_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


def check_endpoint(url: str) -> str | None:
    """Why ``url`` is not acceptable as an upstream endpoint, or None.

    Only http(s) is allowed, and never the link-local range where cloud metadata services live: an upstream
    there would hand instance credentials to whoever can make the gateway send requests.
    """
    if not re.match(r"^https?://", url, re.I):
        return "not a URL (expected http:// or https://)"
    parts = urlsplit(url)
    try:
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "not a URL (bad port)"
    if not host or any(c.isspace() for c in url):
        return "not a URL"
    if host.lower() in _BLOCKED_HOSTS:
        return "cloud metadata hosts are not allowed as endpoints"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if addr.is_link_local or (
        isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped and addr.ipv4_mapped.is_link_local
    ):
        return "link-local addresses (cloud metadata services) are not allowed as endpoints"
    return None


def builtin_registry() -> ProviderRegistry:
    """The registry with the built-in provider types (and workflow steps), registered through the plugins' ``init``
    hook exactly as a third-party plugin registers its own; a config checked against it loads the others."""
    from gateway.plugins import Extensions  # the plugin machinery lives with the gateway; imported on use

    return Extensions.builtin()

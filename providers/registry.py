"""Provider types register here, built-in ones exactly like plugins' ones.

A :class:`ProviderType` names a ``type`` value of the config, the msgspec struct its section converts to, a
``check`` for what types cannot say (URLs, ranges), and a factory that builds the :class:`Provider`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
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


# Metadata services outside the link-local range: AWS's IPv6 one (Nitro) and Alibaba Cloud's.
_METADATA_ADDRESSES = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


def _as_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address if it is one in any spelling the resolver accepts, or None for a name.

    ``inet_aton`` reads what ``ip_address`` refuses but connect() honours: "2852039166", "0xA9FEA9FE",
    "0251.0376.0251.0376", "169.254.43518".
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def forbidden_address(host: str) -> bool:
    """True if ``host`` is an address (in any spelling) of the link-local range or a cloud metadata service.

    Checked on the endpoint in the config, and again on what its name resolves to when connecting
    (:class:`providers.openai_compat.GuardedResolver`): a name can be made to point there too.
    """
    addr = _as_address(host.partition("%")[0])  # an IPv6 zone ("fe80::1%eth0") does not change the address
    if addr is None:
        return False
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    return addr.is_link_local or addr in _METADATA_ADDRESSES or (mapped is not None and mapped.is_link_local)


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
    host = host.lower().rstrip(".")  # "169.254.169.254." and "metadata.google.internal." name the same hosts
    if host in _BLOCKED_HOSTS:
        return "cloud metadata hosts are not allowed as endpoints"
    addr = _as_address(host)
    if addr is None:
        return None
    if (
        addr.is_link_local
        or addr in _METADATA_ADDRESSES
        or (isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped and addr.ipv4_mapped.is_link_local)
    ):
        return "link-local and cloud metadata addresses are not allowed as endpoints"
    return None


def builtin_registry() -> ProviderRegistry:
    """The registry with the built-in provider types (and workflow steps), registered through the plugins' ``init``
    hook exactly as a third-party plugin registers its own; a config checked against it loads the others."""
    from gateway.plugins import Extensions  # the plugin machinery lives with the gateway; imported on use

    return Extensions.builtin()

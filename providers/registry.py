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

from yarl import URL

from minigate.providers.base import Provider

__all__ = [
    "ENGINE_HOST_ENV",
    "ProviderContext",
    "ProviderRegistry",
    "ProviderType",
    "always_local",
    "check_endpoint_url",
    "forbidden_address",
    "loopback_url",
]


# Set by ``minigate serve --workers N`` in each gateway process: the unix socket of the supervisor's engine host.
ENGINE_HOST_ENV = "MINIGATE_ENGINE_HOST"


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What a provider factory may know of the gateway: its folders and the machine resources to use."""

    base_dir: Path
    data_dir: Path
    cpu_threads: int | None = None
    gpu_memory: str | int | None = None
    engine_host: str | None = None  # the socket of local engines shared by every gateway process (serve --workers)


@dataclass(frozen=True, slots=True)
class ProviderType:
    """One ``type`` of provider section: its config struct, extra checks and factory."""

    name: str
    config_type: type[Any]
    factory: Callable[[str, Any, ProviderContext], Provider]
    checker: Callable[[Any], Iterable[tuple[str, str]]] | None = None
    # Whether a section's requests stay on this machine (``always_local``, or a test of the section: a remote
    # type whose endpoint is a loopback address). None: they may leave it.
    local: Callable[[Any], bool] | None = None
    # Whether its models take images when a section's ``vision`` key does not say: None, unknown (the upstream
    # decides); False for a type whose models read text only.
    vision: bool | None = None

    def check(self, config: Any) -> list[tuple[str, str]]:
        """``(sub-path, message)`` for each problem in a converted section."""
        return list(self.checker(config)) if self.checker else []

    def is_local(self, config: Any) -> bool:
        """True when requests to a provider of this section never leave the machine."""
        return self.local is not None and self.local(config)


def always_local(config: Any) -> bool:
    """``ProviderType.local`` of a type that runs on this machine whatever its section says."""
    return True


@dataclass(slots=True)
class ProviderRegistry:
    """Provider types by name: the built-in ones and plugins' (``minigate.gateway.plugins.loader.Extensions`` holds
    one)."""

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


_BLOCKED_HOSTS = {"metadata.google.internal", "metadata", "instance-data", "metadata.tencentyun.com"}


# Metadata services outside the link-local range: AWS's IPv6 one (Nitro) and Alibaba Cloud's.
_METADATA_ADDRESSES = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: its IPv4 sits where RFC 6052 puts it for /48-/96


def _as_address(host: str) -> _Address | None:
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


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address a packet to ``addr`` may end up at: the IPv4-mapped (::ffff:0:0/96), -translated
    (::ffff:0:0:0/96) and -compatible (::/96) forms, NAT64 (64:ff9b::/96 and, at each RFC 6052 prefix length,
    64:ff9b:1::/48), 6to4 (2002::/16), Teredo (2001::/32: its server and client) and ISATAP (::5efe:0:0/96)."""
    value, packed = int(addr), addr.packed
    low = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    found = []
    if value >> 32 in (0, 0xFFFF, 0xFFFF0000) or value >> 32 == 0x0064FF9B << 64:
        found.append(low)  # compatible, mapped, translated, NAT64 well-known prefix
    if addr in _NAT64_LOCAL:
        no_u_octet = packed[:8] + packed[9:]  # RFC 6052 skips bits 64-71
        found += [ipaddress.IPv4Address(no_u_octet[n : n + 4]) for n in (6, 7, 8)] + [low]
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found += list(addr.teredo)
    if (value >> 32) & 0xFDFFFFFF == 0x5EFE:  # ISATAP interface identifier, "u" bit either way
        found.append(low)
    return found


def _forbidden(addr: _Address) -> bool:
    if addr.is_link_local or addr in _METADATA_ADDRESSES:
        return True
    return isinstance(addr, ipaddress.IPv6Address) and any(_forbidden(v4) for v4 in _embedded_ipv4(addr))


def forbidden_address(host: str) -> bool:
    """True if ``host`` is an address (in any spelling) no upstream connection may reach: the link-local ranges
    (169.254.0.0/16, fe80::/10), a cloud metadata service, or an IPv6 address that embeds one of these.

    Checked on the endpoint in the config, and again on every address a connection is about to be made to
    (:mod:`minigate.providers.netguard`): a name can be made to point there too.
    """
    addr = _as_address(host.partition("%")[0])  # an IPv6 zone ("fe80::1%eth0") does not change the address
    return addr is not None and _forbidden(addr)


def _hosts(url: str) -> list[str] | None:
    """The hosts aiohttp would connect to for ``url`` (yarl's normalised host and the raw one it actually
    uses), or None if yarl refuses the URL; Unicode dots and digits are already folded to ASCII here."""
    try:
        parsed = URL(url)
        hosts = [parsed.host, parsed.raw_host]
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except (ValueError, UnicodeError):
        return None
    return [h for h in hosts if h] or None


def loopback_url(url: str) -> bool:
    """True when every host ``url`` may reach is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    hosts = _hosts(url)
    if not hosts:
        return False
    for host in hosts:
        addr = _as_address(host)
        if not (host.rstrip(".").lower() == "localhost" or (addr is not None and addr.is_loopback)):
            return False
    return True


def check_endpoint_url(url: str) -> str | None:
    """Why ``url`` is not acceptable as an upstream endpoint, or None.

    Only http(s) is allowed, and never the link-local range where cloud metadata services live: an upstream
    there would hand instance credentials to whoever can make the gateway send requests. The host checked is
    the one the URL library makes of ``url``, since that is where the request goes: full-width dots or circled
    digits are checked as the ASCII ones they become.
    """
    if not re.match(r"^https?://", url, re.I):
        return "not a URL (expected http:// or https://)"
    if any(c.isspace() for c in url):
        return "not a URL"
    hosts = _hosts(url)
    if hosts is None:
        return "not a URL"
    for host in hosts:
        host = host.lower().rstrip(".")  # "169.254.169.254." and "metadata.google.internal." name the same hosts
        if host in _BLOCKED_HOSTS:
            return "cloud metadata hosts are not allowed as endpoints"
        if "%" in host and ":" not in host:
            return "not a URL (percent sign in the host)"
        if forbidden_address(host):
            return "link-local and cloud metadata addresses are not allowed as endpoints"
    return None

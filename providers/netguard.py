"""Upstream connections never reach a link-local or cloud metadata address, whatever the URL or DNS says.

:func:`guarded_socket_factory` checks every address before its socket exists; :class:`GuardedResolver` drops
forbidden DNS answers and says why a name was refused (docs/architecture.md, "Upstream connections").
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from minigate.providers.registry import forbidden_address

__all__ = [
    "AddrInfo",
    "GuardedResolver",
    "SocketFactory",
    "check_connect_address",
    "guarded_connector",
    "guarded_socket_factory",
]

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
"""One ``getaddrinfo()`` entry: family, type, proto, canonical name, socket address."""

SocketFactory = Callable[[AddrInfo], socket.socket]
"""What aiohttp's ``socket_factory`` is: the socket for one address about to be connected to."""


def _refused(what: str) -> OSError:
    return OSError(errno.EACCES, f"{what}: link-local and cloud metadata addresses are refused")


def check_connect_address(family: int, sockaddr: tuple[Any, ...]) -> None:
    """Raise OSError unless ``sockaddr`` is a numeric address that may be connected to.

    The address is read the way the kernel will be given it (``getaddrinfo`` with ``AI_NUMERICHOST``, as asyncio
    does before ``connect``); anything that is not numeric is refused too, since asyncio would resolve it again.
    """
    host, port = str(sockaddr[0]), sockaddr[1]
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        raise OSError(errno.EACCES, f"{host!r} is not a numeric address; refused at connect") from None
    if forbidden_address(host) or any(forbidden_address(str(info[4][0])) for info in infos):
        raise _refused(host)


def guarded_socket_factory(inner: SocketFactory | None = None) -> SocketFactory:
    """A ``socket_factory`` that refuses forbidden addresses before a socket exists, then asks ``inner``."""

    def factory(addr_info: AddrInfo) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        check_connect_address(family, sockaddr)
        return inner(addr_info) if inner is not None else socket.socket(family, kind, proto)

    return factory


class GuardedResolver(AbstractResolver):
    """DNS answers that point at link-local or cloud metadata addresses are dropped before connecting.

    The config refuses such addresses written as endpoints; this refuses a name that resolves there (a DNS
    record an attacker controls, or one changed after the config was checked). ``inner`` is the resolver
    asked (aiohttp's default).
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The inner resolver's answers without the forbidden ones; OSError if none is left, or if ``host`` is
        a name no resolver can encode (an empty or over-long IDNA label: UnicodeError, which aiohttp passes on)."""
        try:
            answers = await self._inner.resolve(host, port, family)
        except UnicodeError as err:
            raise OSError(errno.EINVAL, f"{host!r} cannot be resolved: {err}") from None
        allowed = [a for a in answers if not forbidden_address(str(a["host"]))]
        if not allowed:
            raise _refused(f"{host} resolves only to forbidden addresses")
        return allowed

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


def guarded_connector(
    *,
    limit: int = 100,
    ttl_dns_cache: int | None = 10,
    resolver: AbstractResolver | None = None,
    socket_factory: SocketFactory | None = None,
) -> aiohttp.TCPConnector:
    """aiohttp's connector with both checks; ``resolver`` and ``socket_factory`` are the ones they wrap."""
    return aiohttp.TCPConnector(
        limit=limit,
        ttl_dns_cache=ttl_dns_cache,
        resolver=GuardedResolver(resolver),
        socket_factory=guarded_socket_factory(socket_factory),
    )

#!/usr/bin/env python
"""The floor: a raw bidirectional TCP pipe on uvloop, the least any relay written in Python can add here.

Run from the repository root with the project's venv (127.0.0.1 only)::

    python bench/relay_floor.py --port P --upstream-port U

Every connection accepted on ``P`` gets its own connection to ``U``; bytes are copied as they come, both ways
(``data_received`` -> the other side's ``transport.write``), with no HTTP parsing, no buffering beyond what the
transports hold and no answer of its own. It is the least CPU and latency that any relay written in Python on
uvloop can add between a client and an upstream: a gateway has to do all of this and then its HTTP work too.

Why it exists: bench/bench_load.py streams through it (its "floor" phase) in the same run as straight to the
upstream and through the gateway, so the gateway's added latency and CPU can be read against what a zero-work
Python relay costs on the same machine at the same moment, instead of against zero.

Details: client bytes that arrive before the upstream connection is up are kept and sent once it is; when
one side closes (or the upstream cannot be reached) the other side is closed after its pending bytes are
written; when one side's transport asks to pause writing, reading from the other side pauses until it resumes.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import uvloop

HOST = "127.0.0.1"
PENDING_LIMIT = 256 * 1024  # client bytes held while the upstream connects; reading pauses above this


class Upstream(asyncio.Protocol):
    """The relay's connection to the upstream: what it reads goes to the client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (the client side starts using it once its connect task returns)."""
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Copy the upstream's bytes to the client."""
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The upstream closed: close the client once what it still has to receive is written."""
        self.client.close()

    def pause_writing(self) -> None:
        """The upstream's send buffer is full: stop reading from the client."""
        self.client.pause_reading()

    def resume_writing(self) -> None:
        """The upstream's send buffer has drained: read from the client again."""
        self.client.resume_reading()


class Client(asyncio.Protocol):
    """A connection accepted from a client: it opens one upstream connection and pipes both ways."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None  # set once the upstream connection is up
        self.pending: list[bytes] = []  # client bytes received before that
        self.held = 0  # their size
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start connecting to the upstream; the client's bytes are held until that is done."""
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.transport = transport
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        """Open the upstream connection and send what the client sent meanwhile; close the client on failure."""
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: Upstream(self), HOST, self.upstream_port)
        except OSError:
            self.close()
            return
        if self.closed:  # the client went away while we were connecting
            assert upstream.transport is not None
            upstream.transport.close()
            return
        self.upstream = upstream
        assert upstream.transport is not None
        if self.held > PENDING_LIMIT:
            self.resume_reading()  # the limit paused it; the upstream's own flow control takes over from here
        upstream.transport.writelines(self.pending)
        self.pending, self.held = [], 0

    def data_received(self, data: bytes) -> None:
        """Copy the client's bytes to the upstream, or hold them until it is connected."""
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)
            return
        self.pending.append(data)
        self.held += len(data)
        if self.held > PENDING_LIMIT:
            self.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """The client closed: close the upstream once what it still has to receive is written."""
        self.closed = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def pause_writing(self) -> None:
        """The client's send buffer is full: stop reading from the upstream."""
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        """The client's send buffer has drained: read from the upstream again."""
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def write(self, data: bytes) -> None:
        """Send ``data`` to the client."""
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Close the client's connection after its pending bytes are written."""
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        """Stop reading from the client (no-op once it is closing)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the client again (no-op once it is closing)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


async def serve(port: int, upstream_port: int) -> None:
    """Accept clients on ``port`` and pipe each of them to ``upstream_port``, forever."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream_port), HOST, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Parse the ports and run the pipe on uvloop until killed."""
    p = argparse.ArgumentParser(description="a raw TCP pipe on uvloop, the floor for bench_load (see the docstring)")
    p.add_argument("--port", type=int, required=True, help=f"port to listen on ({HOST})")
    p.add_argument("--upstream-port", type=int, required=True, help=f"port to pipe every connection to ({HOST})")
    args = p.parse_args()
    uvloop.run(serve(args.port, args.upstream_port))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""The ASGI floor: the least an ASGI app on ``minigate serve``'s server stack does to relay the upstream's stream.

Run from the repository root with the project's venv (127.0.0.1 only)::

    python bench/relay_asgi_floor.py --port P --upstream-port U [--direct]

uvicorn with the settings ``minigate serve`` gives it (uvloop, its httptools protocol with the header deadline,
no access log, the same collector settings) runs a bare ASGI app, no framework: each request's body is read,
sent to ``U`` with aiohttp (the HTTP client minigate's providers use) and the upstream's answer is relayed as it
comes, each piece the client library hands out sent as one ``http.response.body`` (``more_body``). No parsing,
no usage, no deadlines. ``--direct`` writes each piece straight to the connection while it is not paused, as
``minigate.gateway.core.writes.body_writer`` does (else through ``send``).

Why it exists: bench/bench_load.py streams through it (its "asgi" and "asgi_w" phases) beside the raw TCP pipe
(bench/relay_floor.py) and the gateway, so what the chosen stack costs can be told apart from what the
gateway adds on top of it.
"""

from __future__ import annotations

import argparse
import gc
from typing import Any

import aiohttp
import uvicorn

from minigate.gateway.core.writes import LINK
from minigate.gateway.http.limits import header_deadline

HOST = "127.0.0.1"
HEADERS = ("content-type", "authorization")  # the request headers passed on


class Relay:
    """A bare ASGI app that relays every HTTP request to the upstream and its answer back, piece by piece."""

    def __init__(self, upstream_port: int, direct: bool) -> None:
        self.base, self.direct = f"http://{HOST}:{upstream_port}", direct
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.relay(scope, receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        """Open the client session at startup, close it at shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=1000)  # a provider's max_connections
                self.session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def relay(self, scope: Any, receive: Any, send: Any) -> None:
        """One request: its body to the upstream, the upstream's answer back as it comes."""
        assert self.session is not None
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        wanted = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        headers = {name: wanted[name] for name in HEADERS if name in wanted}
        url = self.base + scope["path"]
        async with self.session.request(scope["method"], url, data=body, headers=headers) as resp:
            kind = resp.headers.get("content-type", "application/octet-stream").encode("latin-1")
            await send({"type": "http.response.start", "status": resp.status, "headers": [(b"content-type", kind)]})
            link = (scope.get("extensions") or {}).get(LINK, {}).get("link") if self.direct else None
            if link is not None and not link.chunked:
                link = None
            async for raw in resp.content.iter_any():
                if link is not None:
                    if link.gone:
                        return
                    if not link.paused:
                        link.write_chunk(raw)
                        continue
                await send({"type": "http.response.body", "body": raw, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def main() -> None:
    """Parse the ports and serve the relay on uvicorn until killed."""
    p = argparse.ArgumentParser(description="a bare ASGI relay on minigate's server stack (see the docstring)")
    p.add_argument("--port", type=int, required=True, help=f"port to listen on ({HOST})")
    p.add_argument("--upstream-port", type=int, required=True, help=f"the upstream's port ({HOST})")
    p.add_argument("--direct", action="store_true", help="write to the connection while it is not paused")
    args = p.parse_args()
    config = uvicorn.Config(
        Relay(args.upstream_port, args.direct),
        host=HOST,
        port=args.port,
        loop="uvloop",
        http=header_deadline(30.0),  # minigate serve's protocol, server.body_timeout's default as its deadline
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level="warning",
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    gc.collect()  # as minigate serve does before it serves
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    server.run()


if __name__ == "__main__":
    main()

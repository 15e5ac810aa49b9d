"""The gateway in process, for the fast layer: the real app through Litestar's test client, no socket.

:class:`InProcessGateway` builds the app as :class:`tests.gateway_server.GatewayServer` does (same config
parsing, same ``create_app``; the lifespan runs on start and stop) and answers the same questions (``client()``,
``rows()``, ``wait_rows()``), so a test reads the same against either. Requests go through ``http``, an
``httpx.Client`` whose transport calls the ASGI app on the test client's event loop; the official ``openai`` SDK
is pointed at it too. Fake upstreams stay real aiohttp servers on 127.0.0.1: the gateway's upstream client needs
a socket, the gateway does not.

Not for what needs a socket: write deadlines, disconnects, slow clients, signals, ``minigate serve``, browsers.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import openai
from litestar.testing import TestClient
from litestar.testing.transport import TestClientTransport

from minigate.gateway.app import create_app
from minigate.gateway.runtime.gateway import Gateway
from tests.gateway_server import ADMIN_KEY, StoredGateway

BASE = "http://127.0.0.1"
T = TypeVar("T")


class _Transport(TestClientTransport[Any]):
    """The test client's transport for another ``httpx.Client`` (used in ``with`` too); it holds no connection."""

    def __enter__(self) -> _Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to close."""

    def close(self) -> None:
        """Nothing to close."""


class InProcessGateway(StoredGateway):
    """The gateway app for ``config`` (a dict in the seed format) with its data in ``data_dir``, in process."""

    _client: TestClient[Any] | None = None

    @property
    def url(self) -> str:
        """Base URL of /v1 (for the in-process clients; nothing listens there)."""
        return f"{BASE}/v1"

    @property
    def http(self) -> httpx.Client:
        """The in-process HTTP client (base URL :data:`BASE`); it keeps cookies like any ``httpx.Client``."""
        assert self._client is not None, "the gateway is not started"
        return self._client

    def start(self) -> InProcessGateway:
        """Build the app and run its startup."""
        os.environ["MINIGATE_ADMIN_KEY"] = ADMIN_KEY
        client: TestClient[Any] = TestClient(create_app(self.config, self.extensions), base_url=BASE, timeout=10)
        client.__enter__()
        self._client = client
        return self

    def new_http(self, **kwargs: Any) -> httpx.Client:
        """Another client of the running app, with cookies of its own."""
        kwargs.setdefault("base_url", BASE)
        kwargs.setdefault("timeout", 10)
        return httpx.Client(transport=_Transport(self.http), **kwargs)

    def stop(self) -> None:
        """Run the app's shutdown."""
        self._close_clients()
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None

    def __enter__(self) -> InProcessGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, work: Callable[[Gateway], Awaitable[T]]) -> T:
        """Await ``work(gateway)`` on the app's event loop (e.g. to store what waits in memory now)."""
        assert self._client is not None, "the gateway is not started"
        gateway: Gateway = self._client.app.state.gateway
        return self._client.blocking_portal.call(work, gateway)

    def client(self, key: str = ADMIN_KEY, **kwargs: Any) -> openai.OpenAI:
        """The official SDK talking to this app in process (no SDK retries: the gateway does the retrying)."""
        kwargs.setdefault("max_retries", 0)
        return self._kept(openai.OpenAI(base_url=self.url, api_key=key, http_client=self.new_http(), **kwargs))

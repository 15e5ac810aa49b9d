"""A real minigate server on 127.0.0.1 for end-to-end tests: uvicorn in a thread, the app built from a config.

Tests talk to it over HTTP with the official ``openai`` SDK or httpx, and read what it stored with an
independent ``sqlite3`` connection, as an operator would.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import openai
import uvicorn

from minigate.gateway.app import create_app
from minigate.gateway.cli import proxy_options
from minigate.gateway.config.schema import Config
from minigate.gateway.http.limits import header_deadline
from minigate.gateway.plugins.loader import builtin_extensions, configure

ADMIN_KEY = "test-admin-key-0123456789"


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class StoredGateway:
    """A gateway for ``config`` (a dict in the seed format) with its data in ``data_dir``, and what it stored."""

    def __init__(self, config: dict[str, Any], data_dir: Path, env: dict[str, str] | None = None) -> None:
        raw = json.loads(json.dumps(config))
        raw.setdefault("server", {})["data_dir"] = str(data_dir)
        self.extensions = builtin_extensions()  # the plugins the config names, loaded once, handed to the app
        self.config: Config = configure(raw, self.extensions, env=env or {})
        self.data_dir = data_dir
        self._sdk_clients: list[openai.OpenAI] = []

    def _kept(self, client: openai.OpenAI) -> openai.OpenAI:
        """``client``, closed (with its connections) when the gateway stops."""
        self._sdk_clients.append(client)
        return client

    def _close_clients(self) -> None:
        while self._sdk_clients:
            self._sdk_clients.pop().close()

    @property
    def db_path(self) -> Path:
        """The SQLite file the gateway writes."""
        return self.data_dir / "minigate.db"

    def rows(self, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Usage rows as stored, read through a connection of our own."""
        with sqlite3.connect(self.db_path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(f"SELECT * FROM usage WHERE {where} ORDER BY id", params)]

    def row_of(self, request: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The one usage row of ``request`` (a response, by its x-request-id, or the id itself), waiting
        (boundedly) for it to be committed; its hops decoded."""
        request_id = request if isinstance(request, str) else request.headers["x-request-id"]
        deadline = time.monotonic() + timeout
        while not (rows := self.rows("request_id = ?", (request_id,))) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rows, f"no usage row for {request_id}"
        [row] = rows
        row["hops"] = json.loads(row["hops"]) if row["hops"] else []
        return row

    def wait_rows(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Usage rows once at least ``count`` exist (rows of cancelled requests land just after)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)


class GatewayServer(StoredGateway):
    """Runs the gateway for ``config`` (a dict in the seed format) with its data in ``data_dir``."""

    def __init__(self, config: dict[str, Any], data_dir: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(config, data_dir, env)
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of /v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> GatewayServer:
        """Start serving; returns once the server accepts connections."""
        import os

        os.environ["MINIGATE_ADMIN_KEY"] = ADMIN_KEY
        app = create_app(self.config, self.extensions)
        cfg = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            http=header_deadline(self.config.server.body_timeout),  # as `minigate serve` does
            lifespan="on",
            access_log=False,
            log_level="warning",
            **proxy_options(self.config.server),  # as `minigate serve` does
        )
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the lifespan to close everything."""
        self._close_clients()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, key: str = ADMIN_KEY, **kwargs: Any) -> openai.OpenAI:
        """The official SDK pointed at this gateway (no SDK retries: the gateway does the retrying)."""
        kwargs.setdefault("max_retries", 0)
        return self._kept(openai.OpenAI(base_url=self.url, api_key=key, **kwargs))

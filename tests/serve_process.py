"""``minigate serve`` as its own process on 127.0.0.1, as an operator runs it: a config file, signals, its log.

Its stderr (the JSON log) goes to a file the test can read at any time; a pipe nobody reads would stall it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.gateway_server import ADMIN_KEY, free_port


class ServeProcess:
    """A gateway process for ``config`` (seed format) in ``folder``; ``start()`` waits until /health answers."""

    def __init__(self, config: dict[str, Any], folder: Path, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "minigate.json"
        self.port = free_port()
        config = json.loads(json.dumps(config))
        config.setdefault("server", {}).setdefault("data_dir", "data")
        config["server"].setdefault("workers", 1)  # one process unless a test asks for more
        self.write_config(config)
        self.env = {**os.environ, "MINIGATE_ADMIN_KEY": ADMIN_KEY, **(env or {})}
        self.log_path = folder / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of /v1."""
        return f"{self.base}/v1"

    @property
    def db_path(self) -> Path:
        """The SQLite file the gateway writes."""
        return self.folder / "data" / "minigate.db"

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the config file (atomically, as an editor saving it would)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        tmp.replace(self.config_path)

    def start(self, timeout: float = 30) -> ServeProcess:
        """Spawn the process and wait until GET /health answers 200."""
        args = [sys.executable, "-m", "minigate.gateway.cli", "serve", "--config", str(self.config_path)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*args, "--port", str(self.port), "--no-pull"],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base}/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the process."""
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Terminate the process if it still runs (kill it after 20 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines, decoded (a line that is not JSON fails the test)."""
        # "\n" only: splitlines() would also split at U+2028 or U+0085 inside a logged string.
        return [json.loads(line) for line in self.log_text().split("\n") if line.strip()]

    def rows(self, where: str = "1=1") -> list[dict[str, Any]]:
        """Usage rows as stored, read through a connection of our own."""
        with sqlite3.connect(self.db_path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(f"SELECT * FROM usage WHERE {where} ORDER BY id")]

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with the bootstrap admin key."""
        headers = {"authorization": f"Bearer {ADMIN_KEY}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=10, **kwargs)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

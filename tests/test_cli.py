"""The command line as a user runs it: serve, keys create/list/revoke, and no lost rows on kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import free_port


def minigate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minigate.gateway.cli", *args], capture_output=True, text=True, env=env, timeout=60
    )


class Served:
    def __init__(self, config: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.config, self.port, self.process = config, port, process
        self.url = f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``minigate serve --config FILE`` as its own process, over a fake upstream."""
    with FakeUpstream("up") as upstream:
        config = tmp_path / "minigate.json"
        config.write_text(
            json.dumps(
                {
                    "agents": {"defaults": {"model": {"primary": "up/m"}}},
                    "models": {"providers": {"up": {"endpoint": upstream.url}}},
                    "server": {"data_dir": "data", "workers": 1},
                }
            )
        )
        port = free_port()
        env = {**os.environ, "MINIGATE_ADMIN_KEY": "bootstrap-admin"}
        # Its log goes to a file: a pipe nobody reads would fill up and stall the server.
        log = (tmp_path / "gateway.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "minigate.gateway.cli", "serve", "--config", str(config), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.05)
        yield Served(config, port, process)
        if process.poll() is None:
            process.terminate()
            process.wait(15)
        log.close()


def chat(url: str, key: str) -> Any:
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "hi"}]
    )


def test_keys_lifecycle(served: Served) -> None:
    assert chat(served.url, "bootstrap-admin").parse().choices[0].message.content == "Hello from up"
    created = minigate("keys", "create", "laptop", "--config", str(served.config))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("mg-") and "shown only once" in created.stderr
    assert chat(served.url, key).parse().choices[0].message.content
    listing = minigate("keys", "list", "--config", str(served.config))
    assert "laptop" in listing.stdout and "active" in listing.stdout and key not in listing.stdout
    key_id = listing.stdout.splitlines()[1].split()[0]
    revoked = minigate("keys", "revoke", key_id, "--config", str(served.config))
    assert revoked.returncode == 0
    assert minigate("keys", "revoke", key_id, "--config", str(served.config)).returncode == 1
    time.sleep(2.2)  # the gateway's key cache lives 2 s
    with pytest.raises(openai.AuthenticationError):
        chat(served.url, key)
    db = served.config.parent / "data" / "minigate.db"
    assert key.encode() not in db.read_bytes()
    with sqlite3.connect(db) as conn:
        keys = [r[0] for r in conn.execute("SELECT key_id FROM usage WHERE status = 200")]
    assert keys == [None, int(key_id)]  # the bootstrap key has no id


def test_kill_9_loses_no_answered_row(served: Served) -> None:
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=5) as client:
            for _ in range(2000):
                if stop.is_set():
                    return
                try:
                    r = client.post(
                        f"{served.url}/chat/completions",
                        headers={"authorization": "Bearer bootstrap-admin"},
                        json={"model": "default", "messages": [{"role": "user", "content": "x"}]},
                    )
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    answered.append(r.headers["x-request-id"])

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(answered) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    served.process.send_signal(signal.SIGKILL)
    served.process.wait(5)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(answered) >= 200
    with sqlite3.connect(served.config.parent / "data" / "minigate.db") as conn:
        stored = {r[0] for r in conn.execute("SELECT request_id FROM usage")}
    assert set(answered) <= stored


def test_serve_refuses_a_bad_config_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"models": {"providers": {"x": {"endpoint": "nope"}}}}))
    result = minigate("serve", "--config", str(config))
    assert result.returncode == 2
    assert "models.providers.x.endpoint: not a URL" in result.stderr and "Traceback" not in result.stderr

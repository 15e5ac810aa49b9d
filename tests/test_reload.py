"""Config reload against the gateway in process, its config read from a file as ``minigate serve`` reads it:
refused when invalid (by ``POST /admin/reload`` and by the file watcher), with web UI chain overrides kept, naming
what needs a restart, and only for an admin. Reloading ``minigate serve`` under load is in
``tests/test_reload_socket.py``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.gateway.ops.logs import JsonFormatter, Redactor
from minigate.gateway.plugins.loader import configure_file
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


def config_for(a: FakeUpstream, b: FakeUpstream, version: int, **server: Any) -> dict[str, Any]:
    """Version 1 routes the default agent a -> b, version 2 b -> a; provider a's header names the version."""
    chain = ["a/m", "b/m"] if version == 1 else ["b/m", "a/m"]
    return {
        "agents": {
            "defaults": {"model": {"primary": chain[0], "fallbacks": chain[1:]}},
            "other": {"model": {"primary": "b/m"}},
        },
        "models": {
            "providers": {
                "a": {"endpoint": a.url, "headers": {"x-config-version": str(version)}},
                "b": {"endpoint": b.url},
            }
        },
        "server": {"shutdown_grace": 5, **server},
    }


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream("a") as a, FakeUpstream("b") as b:
        yield a, b


class FileGateway(InProcessGateway):
    """The gateway in process with its config in ``folder/minigate.json`` (data in ``folder/data``), read as
    ``minigate serve --config`` reads it, so ``POST /admin/reload`` and the file watcher have a file to read."""

    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "minigate.json"
        config = json.loads(json.dumps(config))
        config.setdefault("server", {}).setdefault("data_dir", "data")
        self.write_config(config)
        super().__init__(config, folder / "data")
        self.config = configure_file(self.config_path, self.extensions)  # its source is the file, as when served

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the config file (atomically, as an editor saving it would)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        tmp.replace(self.config_path)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with the bootstrap admin key."""
        headers = {**AUTH, **kwargs.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kwargs)


@pytest.fixture(autouse=True)
def _info_log(caplog: pytest.LogCaptureFixture) -> None:
    """Keep the log at INFO, the level ``minigate serve`` logs at (reload notes are INFO)."""
    caplog.set_level(logging.INFO)


def log_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The log so far, each record as the JSON line ``minigate serve`` writes for it, decoded."""
    formatter = JsonFormatter(Redactor())
    return [json.loads(formatter.format(record)) for record in caplog.records]


def ask(gateway: InProcessGateway, model: str = "default") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return gateway.http.post("/v1/chat/completions", headers=AUTH, json=body, timeout=10)


def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow  # waits for the file watcher (it looks every second) three times
def test_invalid_reload_is_refused_and_the_old_config_keeps_serving(
    tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = upstreams
    with FileGateway(config_for(a, b, 1), tmp_path) as gateway:
        broken = config_for(a, b, 2)
        broken["agents"]["defaults"]["model"]["primary"] = "nowhere/m"
        broken["models"]["providers"]["b"]["endpoint"] = "not a url"
        gateway.write_config(broken)
        refused = gateway.admin("POST", "/admin/reload")
        assert refused.status_code == 400
        body = refused.json()
        assert body["error"]["code"] == "invalid_config" and body["error"]["type"] == "invalid_request_error"
        assert body["issues"] == [
            "models.providers.b.endpoint: not a URL (expected http:// or https://)",
            "agents.defaults.model.primary: unknown provider 'nowhere' (providers: a, b)",
        ]
        assert "agents.defaults.model.primary: unknown provider 'nowhere'" in body["error"]["message"]
        assert ask(gateway).json()["model"] == "a/m"  # version 1 still serves
        assert a.requests[-1].headers["x-config-version"] == "1"

        def rejected() -> list[dict[str, Any]]:
            return [r for r in log_records(caplog) if r.get("result") == "rejected"]

        before = len(rejected())
        gateway.write_config({"agents": {"defaults": "not an object"}})  # the watcher finds it and refuses it
        wait_for(lambda: len(rejected()) > before)
        assert rejected()[-1]["source"] == "file" and rejected()[-1]["level"] == "ERROR"
        assert rejected()[-1]["issues"][0].startswith("agents[...]: ")  # then msgspec's words for the type
        before = len(rejected())
        (gateway.config_path).write_text("{not json")
        wait_for(lambda: len(rejected()) > before)
        assert "not valid JSON" in rejected()[-1]["issues"][0]
        assert ask(gateway).status_code == 200 and a.requests[-1].headers["x-config-version"] == "1"

        gateway.write_config(config_for(a, b, 2))  # fixed: the watcher applies it
        wait_for(lambda: any(r.get("result") == "ok" for r in log_records(caplog)))
        assert ask(gateway).json()["model"] == "b/m"


@pytest.mark.fast
def test_reload_keeps_web_chain_overrides(tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    with FileGateway(config_for(a, b, 1), tmp_path) as gateway:
        web = WebClient(gateway)
        try:
            assert web.login(ADMIN_KEY).status_code == 303
            saved = web.post("/models/chain", {"agent": "other", "op": "save", "chain": ["a/m", "b/m"]})
            assert saved.status_code == 303
        finally:
            web.close()
        assert ask(gateway, "other").json()["model"] == "a/m"
        gateway.write_config(config_for(a, b, 2))
        assert gateway.admin("POST", "/admin/reload").status_code == 200
        assert ask(gateway).json()["model"] == "b/m"  # the new config is in force...
        assert ask(gateway, "other").json()["model"] == "a/m"  # ...and so is the override
        assert a.requests[-1].headers["x-config-version"] == "2"


@pytest.mark.fast
def test_reload_names_settings_that_need_a_restart(
    tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = upstreams
    with FileGateway(config_for(a, b, 1), tmp_path) as gateway:
        gateway.write_config(config_for(a, b, 1, port=1, data_dir="elsewhere", shutdown_grace=1))
        answer = gateway.admin("POST", "/admin/reload").json()
        assert answer["status"] == "reloaded" and answer["providers"]["kept"] == ["a", "b"]
        assert answer["restart_required"] == [
            "server.port: 8080 -> 1 needs a restart (the running value stays)",
            "server.data_dir: 'data' -> 'elsewhere' needs a restart (the running value stays)",
        ]
        assert ask(gateway).status_code == 200  # still on its old port and database
        assert len(gateway.rows()) == 1
        notes = [r for r in log_records(caplog) if r.get("event") == "config_reload"]
        assert notes[-1]["restart_required"] == answer["restart_required"]


@pytest.mark.fast
def test_reload_needs_an_admin_key(tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    with FileGateway(config_for(a, b, 1), tmp_path) as gateway:
        anonymous = gateway.http.post("/admin/reload")
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
        created = gateway.admin("GET", "/admin/api/models")
        assert created.status_code == 200
        assert json.loads(gateway.admin("POST", "/admin/reload").text)["status"] == "reloaded"


@pytest.mark.fast
def test_reload_keeps_the_count_of_calls_in_flight(
    tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = upstreams
    with FileGateway(config_for(a, b, 1), tmp_path) as gateway:
        running = gateway.http.app.state.gateway  # type: ignore[attr-defined]
        running.health.load.sent("a/m")  # a call still running when the config changes (a group's least_busy)
        gateway.write_config(config_for(a, b, 2))
        assert gateway.admin("POST", "/admin/reload").status_code == 200
        assert running.health.load.busy == {"a/m": 1}  # the new book still sees it...
        running.health.load.done("a/m")  # ...and its end releases it there
        assert running.health.load.busy == {}

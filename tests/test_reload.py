"""Config reload on a real ``minigate serve`` process: under load, refused when invalid, from the watched file,
with web UI chain overrides kept, and naming what needs a restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.gateway_server import ADMIN_KEY
from tests.serve_process import ServeProcess
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


def ask(url: str, model: str = "default") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/chat/completions", headers=AUTH, json=body, timeout=10)


def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_reload_under_load_fails_no_request(tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    for fake in (a, b):
        fake.set_default(Reply(chunks=6, interval=0.04))  # streams last about 0.2 s: many span a reload
    gateway = ServeProcess(config_for(a, b, 1), tmp_path).start()
    failures: list[str] = []
    done = [0]
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=10) as client:
            for i in range(400):  # bounded in count, and by ``stop`` in time
                if stop.is_set():
                    return
                stream = (i + worker) % 2 == 0
                model = "default" if i % 3 else "a/m"  # a/m: provider a serves in every version
                body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
                try:
                    with client.stream("POST", "/chat/completions", json=body) as response:
                        text = response.read().decode()
                    if response.status_code != 200 or (stream and not text.rstrip().endswith("data: [DONE]")):
                        failures.append(f"{response.status_code}: {text[-300:]}")
                except httpx.HTTPError as err:
                    failures.append(repr(err))
                done[0] += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
    try:
        for t in threads:
            t.start()
        answers = []
        deadline = time.monotonic() + 20
        for n in range(12):
            if time.monotonic() > deadline:
                break
            gateway.write_config(config_for(a, b, 2 if n % 2 == 0 else 1))
            if n % 3 == 2:  # every third change is left to the file watcher
                time.sleep(1.5)
                continue
            answers.append(gateway.admin("POST", "/admin/reload"))
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(30)
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        assert any(r.json()["providers"]["replaced"] == ["a"] for r in answers)
        assert all(r.json()["providers"]["kept"] in (["a", "b"], ["b"]) for r in answers)
        assert failures == [] and done[0] > 100, (failures[:5], done[0])
        # Both configurations served: provider a was called with each version of its header.
        versions = {r.headers.get("x-config-version") for r in a.requests}
        assert versions == {"1", "2"}
        rows = gateway.rows()
        assert len(rows) == done[0] and {r["status"] for r in rows} == {200}
        records = gateway.log_records()
        assert {r["source"] for r in records if r.get("event") == "config_reload"} == {"admin", "file"}
        metrics = httpx.get(f"{gateway.base}/metrics").text
        assert 'minigate_config_reloads_total{result="ok"}' in metrics
    finally:
        stop.set()
        gateway.stop()


def test_invalid_reload_is_refused_and_the_old_config_keeps_serving(
    tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = upstreams
    with ServeProcess(config_for(a, b, 1), tmp_path) as gateway:
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
        assert ask(gateway.url).json()["model"] == "a/m"  # version 1 still serves
        assert a.requests[-1].headers["x-config-version"] == "1"

        def rejected() -> list[dict[str, Any]]:
            return [r for r in gateway.log_records() if r.get("result") == "rejected"]

        before = len(rejected())
        gateway.write_config({"agents": {"defaults": "not an object"}})  # the watcher finds it and refuses it
        wait_for(lambda: len(rejected()) > before)
        assert rejected()[-1]["source"] == "file" and rejected()[-1]["level"] == "ERROR"
        assert rejected()[-1]["issues"][0].startswith("agents[...]: ")  # then msgspec's words for the type
        before = len(rejected())
        (gateway.config_path).write_text("{not json")
        wait_for(lambda: len(rejected()) > before)
        assert "not valid JSON" in rejected()[-1]["issues"][0]
        assert ask(gateway.url).status_code == 200 and a.requests[-1].headers["x-config-version"] == "1"

        gateway.write_config(config_for(a, b, 2))  # fixed: the watcher applies it
        wait_for(lambda: any(r.get("result") == "ok" for r in gateway.log_records()))
        assert ask(gateway.url).json()["model"] == "b/m"


def test_reload_keeps_web_chain_overrides(tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    with ServeProcess(config_for(a, b, 1), tmp_path) as gateway:
        web = WebClient(gateway)  # type: ignore[arg-type]  # it needs only the port
        try:
            assert web.login(ADMIN_KEY).status_code == 303
            saved = web.post("/models/chain", {"agent": "other", "op": "save", "chain": ["a/m", "b/m"]})
            assert saved.status_code == 303
        finally:
            web.close()
        assert ask(gateway.url, "other").json()["model"] == "a/m"
        gateway.write_config(config_for(a, b, 2))
        assert gateway.admin("POST", "/admin/reload").status_code == 200
        assert ask(gateway.url).json()["model"] == "b/m"  # the new config is in force...
        assert ask(gateway.url, "other").json()["model"] == "a/m"  # ...and so is the override
        assert a.requests[-1].headers["x-config-version"] == "2"


def test_reload_names_settings_that_need_a_restart(
    tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = upstreams
    with ServeProcess(config_for(a, b, 1), tmp_path) as gateway:
        gateway.write_config(config_for(a, b, 1, port=1, data_dir="elsewhere", shutdown_grace=1))
        answer = gateway.admin("POST", "/admin/reload").json()
        assert answer["status"] == "reloaded" and answer["providers"]["kept"] == ["a", "b"]
        assert answer["restart_required"] == [
            "server.port: 8080 -> 1 needs a restart (the running value stays)",
            "server.data_dir: 'data' -> 'elsewhere' needs a restart (the running value stays)",
        ]
        assert ask(gateway.url).status_code == 200  # still on its old port and database
        assert len(gateway.rows()) == 1
        notes = [r for r in gateway.log_records() if r.get("event") == "config_reload"]
        assert notes[-1]["restart_required"] == answer["restart_required"]


def test_reload_needs_an_admin_key(tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    a, b = upstreams
    with ServeProcess(config_for(a, b, 1), tmp_path) as gateway:
        anonymous = httpx.post(f"{gateway.base}/admin/reload")
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
        created = gateway.admin("GET", "/admin/api/models")
        assert created.status_code == 200
        assert json.loads(gateway.admin("POST", "/admin/reload").text)["status"] == "reloaded"

"""A local worker killed mid-stream, through a real gateway: the client gets the content generated so far, then one
OpenAI-shaped error event (never a hang, never a fallback once content was sent); the row is stored with the
error; the next request starts a new worker.

A worker killed before any content (while loading) falls back instead: test_onnx_gateway.py::
test_worker_killed_while_loading_falls_back_to_remote. The table of every fault is at the top of tests/test_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.providers.onnx.helpers import TINY

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def tiny_dir(tiny_model_source: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(tiny_model_source, folder / TINY)
    return folder


def worker_pid(gateway: GatewayServer) -> int | None:
    """The pid of the tiny model's worker, as the admin API reports it (None when it is not loaded)."""
    base = gateway.url.removesuffix("/v1")
    providers = httpx.get(f"{base}/admin/api/models", headers=AUTH, timeout=30).json()["providers"]
    [model] = [m for p in providers if p["name"] == "local" for m in p["models"] if m["id"] == TINY]
    pid = model.get("pid", (model.get("details") or {}).get("pid"))
    return int(pid) if model["state"] == "loaded" and pid else None


def test_worker_killed_mid_stream_ends_it_with_an_error_event(
    gateway_factory: Callable[..., GatewayServer], tiny_dir: Path
) -> None:
    with FakeUpstream("remote") as remote:
        local = {"type": "onnxruntime-genai", "models_dir": str(tiny_dir), "idle_ttl": None}
        config = {
            "agents": {"defaults": {"model": {"primary": f"local/{TINY}", "fallbacks": ["remote/m"]}}},
            "models": {"providers": {"local": local, "remote": {"endpoint": remote.url}}},
        }
        gateway = gateway_factory(config)
        pid = worker_pid(gateway)
        assert pid is not None  # the default agent's model is loaded at startup
        payload = {
            "model": "default",
            "stream": True,
            "max_tokens": 1900,
            "messages": [{"role": "user", "content": "hi"}],
        }
        events: list[Any] = []
        started = time.monotonic()
        with httpx.stream("POST", f"{gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=60) as r:
            assert r.status_code == 200 and r.headers["x-minigate-provider"] == "local"
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
                if len(events) == 2:  # content is on its way: kill the worker now
                    os.kill(pid, signal.SIGKILL)
        assert time.monotonic() - started < 30
        *chunks, last = events
        assert "[DONE]" not in events and chunks and all("choices" in c for c in chunks)
        assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks)
        assert len(chunks) < 1900  # cut off, not finished
        assert set(last) == {"error"} and set(last["error"]) == {"message", "type", "param", "code"}
        assert last["error"]["code"] == "worker_died" and "Traceback" not in last["error"]["message"]
        assert remote.requests == []  # content had been sent: no fallback mid-answer
        [row] = gateway.wait_rows(1)
        assert (row["status"], row["provider"], row["model"], row["streamed"]) == (502, "local", TINY, 1)
        assert row["request_id"] == r.headers["x-request-id"] and "worker" in row["error"]
        assert row["fallbacks"] == 0 and row["ttft_ms"] is not None
        # The next request starts a new worker and is answered locally.
        answer = httpx.post(
            f"{gateway.url}/chat/completions",
            headers=AUTH,
            json={"model": "default", "max_tokens": 5, "messages": [{"role": "user", "content": "again"}]},
            timeout=60,
        )
        assert answer.status_code == 200 and answer.headers["x-minigate-provider"] == "local"
        assert answer.json()["usage"]["completion_tokens"] == 5
        new_pid = worker_pid(gateway)
        assert new_pid is not None and new_pid != pid
        rows = gateway.wait_rows(2)
        assert (rows[-1]["status"], rows[-1]["provider"], rows[-1]["completion_tokens"]) == (200, "local", 5)


def health(gateway: GatewayServer) -> dict[str, Any]:
    """The failure state of the tiny model's deployment, as the admin API reports it ({} when healthy)."""
    base = gateway.url.removesuffix("/v1")
    providers = httpx.get(f"{base}/admin/api/models", headers=AUTH, timeout=30).json()["providers"]
    [local] = [p for p in providers if p["name"] == "local"]
    state: dict[str, Any] = local["health"].get(f"local/{TINY}", {})
    return state


async def test_a_worker_killed_under_eight_streams_is_one_failure_and_the_next_request_is_answered(
    gateway_factory: Callable[..., GatewayServer], tiny_dir: Path
) -> None:
    local = {"type": "onnxruntime-genai", "models_dir": str(tiny_dir), "idle_ttl": None}
    config = {  # no fallback, the default cooldown (3 failures): a cooldown would answer 503
        "agents": {"defaults": {"model": {"primary": f"local/{TINY}"}}},
        "models": {"providers": {"local": local}},
    }
    gateway = gateway_factory(config)
    pid = await asyncio.to_thread(worker_pid, gateway)
    assert pid is not None
    payload = {"model": "default", "stream": True, "max_tokens": 1900, "messages": [{"role": "user", "content": "hi"}]}
    started = [asyncio.Event() for _ in range(8)]

    async def stream(http: httpx.AsyncClient, ready: asyncio.Event) -> dict[str, Any]:
        async with http.stream("POST", f"{gateway.url}/chat/completions", headers=AUTH, json=payload) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    ready.set()
                    last: dict[str, Any] = json.loads(line.removeprefix("data: "))
        return last

    async with httpx.AsyncClient(timeout=60) as http:
        streams = [asyncio.ensure_future(stream(http, ready)) for ready in started]
        async with asyncio.timeout(60):
            await asyncio.gather(*(ready.wait() for ready in started))  # all eight are generating
        os.kill(pid, signal.SIGKILL)
        ends = await asyncio.gather(*streams)
    assert [end.get("error", {}).get("code") for end in ends] == ["worker_died"] * 8
    state = await asyncio.to_thread(health, gateway)
    assert state["failures"] == 1 and state["cooldown_s"] == 0  # one crash, one failure: no cooldown
    answer = await asyncio.to_thread(
        httpx.post,
        f"{gateway.url}/chat/completions",
        headers=AUTH,
        json={"model": "default", "max_tokens": 5, "messages": [{"role": "user", "content": "again"}]},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.headers["x-minigate-provider"] == "local"
    new_pid = await asyncio.to_thread(worker_pid, gateway)
    assert new_pid is not None and new_pid != pid
    assert await asyncio.to_thread(health, gateway) == {}  # the answer reset the count

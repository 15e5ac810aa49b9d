"""Local models through the running gateway: the real default model with the openai SDK, the admin API,
a worker killed while loading (a remote fake answers), and hot-swap under concurrent load."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.providers.onnx.helpers import TINY

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def local_config(models_dir: Path, primary: str, *fallbacks: str, **extra: Any) -> dict[str, Any]:
    providers: dict[str, Any] = {
        "local": {"type": "onnxruntime-genai", "models_dir": str(models_dir), "idle_ttl": None, "max_context": 512}
    }
    providers.update(extra)
    return {
        "agents": {"defaults": {"model": {"primary": primary, "fallbacks": list(fallbacks)}}},
        "models": {"providers": providers},
    }


def test_default_model_answers_paris_through_the_gateway(
    gateway_factory: Callable[..., GatewayServer], default_models_dir: Path
) -> None:
    gateway = gateway_factory(local_config(default_models_dir, "local/smollm2-135m-instruct"))
    client = gateway.client()
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.chat.completions.create(model="default", messages=question, max_tokens=30, temperature=0)
    assert "Paris" in (answer.choices[0].message.content or "")
    assert answer.model == "local/smollm2-135m-instruct"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="default",
        messages=question,
        max_tokens=30,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    rows = gateway.rows()
    assert [(r["provider"], r["status"]) for r in rows] == [("local", 200), ("local", 200)]
    assert all(r["completion_tokens"] for r in rows)


@pytest.fixture
def tiny_dir(tiny_model_source: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(tiny_model_source, folder / TINY)
    return folder


def test_admin_api_lists_loads_unloads_reloads_imports_and_deletes(
    gateway_factory: Callable[..., GatewayServer], tiny_dir: Path, tiny_model_source: Path
) -> None:
    gateway = gateway_factory(local_config(tiny_dir, f"local/{TINY}"))
    base = gateway.url.removesuffix("/v1") + "/admin/api"

    def state(name: str = TINY) -> str:
        providers = httpx.get(f"{base}/models", headers=ADMIN).json()["providers"]
        return next(m["state"] for m in providers[0]["models"] if m["id"] == name)

    assert state() == "loaded"  # the default agent's model is loaded at startup
    assert httpx.post(f"{base}/models/local/{TINY}/unload", headers=ADMIN).status_code == 200
    assert state() == "available"
    assert httpx.post(f"{base}/models/local/{TINY}/load", headers=ADMIN).status_code == 200
    assert state() == "loaded"
    assert httpx.post(f"{base}/models/local/{TINY}/reload", headers=ADMIN).status_code == 200
    assert httpx.post(f"{base}/models/local/nope/load", headers=ADMIN).status_code == 404

    started = httpx.post(
        f"{base}/models/local/import", headers=ADMIN, json={"source": str(tiny_model_source), "name": "tiny-copy"}
    )
    assert started.status_code == 202
    job_id = started.json()["job"]["id"]
    deadline = time.monotonic() + 60
    while (job := httpx.get(f"{base}/jobs/{job_id}", headers=ADMIN).json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["state"] == "done", job
    assert job["progress"]
    answer = gateway.client().chat.completions.create(
        model="local/tiny-copy", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    assert "tiny-copy" in [m.id.partition("/")[2] for m in gateway.client().models.list()]

    refused = httpx.post(f"{base}/models/local/import", headers=ADMIN, json={"source": "/etc", "name": "../x"})
    assert refused.status_code == 202  # validated in the job, before anything is written
    job_id = refused.json()["job"]["id"]
    while (job := httpx.get(f"{base}/jobs/{job_id}", headers=ADMIN).json())["state"] == "running":
        time.sleep(0.1)
    assert job["state"] == "failed" and job["status"] == 400

    assert httpx.delete(f"{base}/models/local/tiny-copy", headers=ADMIN).status_code == 200
    assert not (tiny_dir / "tiny-copy").exists()


def test_admin_api_needs_an_admin_key(gateway_factory: Callable[..., GatewayServer], tiny_dir: Path) -> None:
    gateway = gateway_factory(local_config(tiny_dir, f"local/{TINY}"))
    base = gateway.url.removesuffix("/v1") + "/admin/api"
    assert httpx.get(f"{base}/models").status_code == 401
    assert httpx.post(f"{base}/models/local/{TINY}/unload").status_code == 401
    import asyncio

    from minigate.gateway.storage import KeyStore, open_database

    async def user_key() -> str:
        db = await open_database(gateway.config.database_url())
        try:
            return (await KeyStore(db).create("user"))[1]
        finally:
            await db.close()

    key = asyncio.run(user_key())
    r = httpx.post(f"{base}/models/local/{TINY}/unload", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"


def engine_pids() -> set[int]:
    """Worker processes of local models started by this test process."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"minigate.providers.onnx.engine" in cmdline:
                found.add(int(entry))
    return found


def test_worker_killed_while_loading_falls_back_to_remote(
    gateway_factory: Callable[..., GatewayServer], tiny_dir: Path
) -> None:
    with FakeUpstream("remote") as remote:
        config = local_config(tiny_dir, f"local/{TINY}", "remote/m", remote={"endpoint": remote.url})
        gateway = gateway_factory(config)
        base = gateway.url.removesuffix("/v1") + "/admin/api"
        assert httpx.post(f"{base}/models/local/{TINY}/unload", headers=ADMIN).status_code == 200
        before = engine_pids()
        killed: list[int] = []

        def killer() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not killed:
                for pid in engine_pids() - before:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.002)

        thread = threading.Thread(target=killer)
        thread.start()
        raw = gateway.client().chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        thread.join()
        assert killed, "no worker was started"
        assert raw.headers["x-minigate-provider"] == "remote"
        assert raw.parse().choices[0].message.content == "Hello from remote"
        [row] = gateway.rows()
        assert row["provider"] == "remote" and row["fallbacks"] == 1 and "local" in row["hops"]


def test_hot_swap_under_concurrent_load_fails_no_request(
    gateway_factory: Callable[..., GatewayServer], tiny_dir: Path
) -> None:
    gateway = gateway_factory(local_config(tiny_dir, f"local/{TINY}"))
    base = gateway.url.removesuffix("/v1") + "/admin/api"
    client = gateway.client(timeout=60)
    failures: list[BaseException] = []
    done: list[int] = []

    def worker(i: int) -> None:
        for _ in range(4):
            try:
                stream = client.chat.completions.create(
                    model="default",
                    messages=[{"role": "user", "content": f"hello {i}"}],
                    max_tokens=24,
                    stream=True,
                )
                tokens = sum(1 for c in stream if c.choices and c.choices[0].delta.content)
                assert tokens > 0
                done.append(tokens)
            except BaseException as err:  # collected, asserted below
                failures.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for _ in range(2):
        time.sleep(0.3)
        assert httpx.post(f"{base}/models/local/{TINY}/reload", headers=ADMIN, timeout=60).status_code == 200
    for t in threads:
        t.join(120)
    assert failures == []
    assert len(done) == 24
    assert all(r["status"] == 200 for r in gateway.rows())


def test_unknown_local_model_is_a_clear_404(gateway_factory: Callable[..., GatewayServer], tiny_dir: Path) -> None:
    gateway = gateway_factory(local_config(tiny_dir, f"local/{TINY}"))
    with pytest.raises(openai.NotFoundError):
        gateway.client().chat.completions.create(model="nothing-here", messages=[{"role": "user", "content": "x"}])

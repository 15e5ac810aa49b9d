"""SIGTERM on a real ``minigate serve`` process: open streams finish or end with an error event, every row is
stored, new connections are refused, model workers stop, and the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.gateway_server import ADMIN_KEY
from tests.serve_process import ServeProcess

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
GRACE = 2.0


class Outcome:
    """What one streaming client saw."""

    def __init__(self) -> None:
        self.first = threading.Event()
        self.events: list[Any] = []
        self.request_id = ""
        self.failure: str | None = None

    @property
    def ending(self) -> str:
        """``done``, the error code of a final error event, or what went wrong."""
        if self.failure:
            return f"failed: {self.failure}"
        if self.events and self.events[-1] == "[DONE]":
            return "done"
        if self.events and isinstance(self.events[-1], dict) and "error" in self.events[-1]:
            return str(self.events[-1]["error"]["code"])
        return "ended without [DONE] or an error event"


def stream(url: str, model: str, outcome: Outcome, prompt: str = "go", **body: Any) -> None:
    """Read one SSE answer to its end, recording every event."""
    payload = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}], **body}
    try:
        with httpx.stream("POST", f"{url}/chat/completions", headers=AUTH, json=payload, timeout=60) as response:
            outcome.request_id = response.headers["x-request-id"]
            if response.status_code != 200:
                outcome.failure = f"HTTP {response.status_code}"
                return
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                outcome.events.append(data if data == "[DONE]" else json.loads(data))
                outcome.first.set()
    except httpx.HTTPError as err:
        outcome.failure = repr(err)
    finally:
        outcome.first.set()


def test_sigterm_during_20_open_streams(tmp_path: Path) -> None:
    with FakeUpstream("up") as upstream:
        upstream.set_default(Reply(chunks=8, interval=0.15))  # about 1.2 s: finishes within the grace period
        upstream.script(*[Reply(chunks=300, interval=0.1)] * 10, model="long")  # 30 s: cut after the grace
        config = {
            "agents": {"defaults": {"model": {"primary": "up/short"}}},
            "models": {"providers": {"up": {"endpoint": upstream.url}}},
            "server": {"shutdown_grace": GRACE},
        }
        gateway = ServeProcess(config, tmp_path).start()
        try:
            outcomes = [Outcome() for _ in range(20)]
            threads = [
                threading.Thread(target=stream, args=(gateway.url, "up/long" if i % 2 else "up/short", o))
                for i, o in enumerate(outcomes)
            ]
            for t in threads:
                t.start()
            for o in outcomes:
                assert o.first.wait(10) and o.failure is None, o.failure
            gateway.signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):  # the listening socket is closed: no new requests
                httpx.get(f"{gateway.base}/health", timeout=2)
            for t in threads:
                t.join(GRACE + 10)
            assert gateway.wait(GRACE + 15) == 0
            took = time.monotonic() - signalled
        finally:
            gateway.stop()
    endings = [o.ending for o in outcomes]
    assert endings == ["done", "server_shutting_down"] * 10, endings
    assert GRACE <= took < GRACE + 5, took
    for o in outcomes[1::2]:  # the cut streams got content before their error event
        assert any(isinstance(e, dict) and e.get("choices") for e in o.events)
    rows = {row["request_id"]: row for row in gateway.rows()}
    assert set(rows) == {o.request_id for o in outcomes}
    assert sorted(row["status"] for row in rows.values()) == [200] * 10 + [503] * 10
    for o in outcomes[1::2]:
        assert "shut down" in rows[o.request_id]["error"] and rows[o.request_id]["provider"] == "up"
    records = gateway.log_records()  # every line is JSON
    assert any(r.get("event") == "shutdown" and r.get("in_flight") == 20 for r in records)
    assert any(r.get("event") == "shutdown_cut" and r.get("in_flight") == 10 for r in records)
    access = [r for r in records if r["logger"] == "minigate.access" and r.get("path") == "/v1/chat/completions"]
    assert sorted(r["status"] for r in access) == [200] * 10 + [503] * 10


def test_sigterm_with_nothing_open_exits_at_once(tmp_path: Path) -> None:
    with FakeUpstream("up") as upstream:
        config = {
            "agents": {"defaults": {"model": {"primary": "up/m"}}},
            "models": {"providers": {"up": {"endpoint": upstream.url}}},
        }
        gateway = ServeProcess(config, tmp_path).start()
        try:
            started = time.monotonic()
            gateway.signal(signal.SIGTERM)
            assert gateway.wait(10) == 0
            assert time.monotonic() - started < 3  # the 30 s default grace is not waited out
        finally:
            gateway.stop()


def test_sigterm_stops_local_model_workers(tmp_path: Path, default_models_dir: Path) -> None:
    config = {
        "agents": {"defaults": {"model": {"primary": "local/smollm2-135m-instruct"}}},
        "models": {"providers": {"local": {"type": "onnxruntime-genai", "models_dir": str(default_models_dir)}}},
        "server": {"shutdown_grace": 1},
    }
    gateway = ServeProcess(config, tmp_path).start(timeout=120)
    try:
        view = gateway.admin("GET", "/admin/api/models").json()
        [model] = [m for p in view["providers"] for m in p["models"] if m["state"] == "loaded"]
        worker = int(model["pid"])
        os.kill(worker, 0)  # the worker runs
        outcome = Outcome()
        # A long answer: it runs past the 1 s grace period, so it is cut. A story, not a count: the model ends a
        # count after about 20 lines (under a second), but tells a story up to max_tokens (about 15 s here).
        long_answer = {"max_tokens": 1500, "prompt": "Write a very long story about a dragon."}
        reader = threading.Thread(target=stream, args=(gateway.url, "default", outcome), kwargs=long_answer)
        reader.start()
        assert outcome.first.wait(60) and outcome.failure is None
        gateway.signal(signal.SIGTERM)
        reader.join(20)
        assert gateway.wait(30) == 0
    finally:
        gateway.stop()
    assert outcome.ending == "server_shutting_down"
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    [row] = gateway.rows()
    assert row["status"] == 503 and row["provider"] == "local"

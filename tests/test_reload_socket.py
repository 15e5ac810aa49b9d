"""Config reload on a real ``minigate serve`` process under load: six clients streaming and not, over sockets, while
the config changes a dozen times through ``POST /admin/reload`` and the watched file; no request fails, and the
process's JSON log and /metrics count the reloads. The other reload tests are in ``tests/test_reload.py``, in
process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.serve_process import ServeProcess
from tests.test_reload import AUTH, config_for


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream("a") as a, FakeUpstream("b") as b:
        yield a, b


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

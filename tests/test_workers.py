"""``minigate serve --workers 2``: two gateway processes on one port under a supervisor, as an operator runs it.

Which process answered a connection is told by ``/ready`` (``worker.pid``); an httpx client keeps its connection,
so a client found on a worker stays on it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway_server import ADMIN_KEY
from tests.serve_process import ServeProcess
from tests.test_shutdown import Outcome, stream

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
CONFIG: dict[str, Any] = {
    "agents": {"defaults": {"model": {"primary": "echo/echo"}}},
    "models": {
        "providers": {"echo": {"type": "fake", "models": ["echo"]}, "slow": {"type": "fake", "delay": 0.3}},
        "aliases": {"aaaaa": "echo/echo"},
    },
    "server": {"workers": 2, "shutdown_grace": 20},
}


def worker_pid(client: httpx.Client) -> int:
    """The pid of the worker process serving this client's connection."""
    answer = client.get("/ready")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["worker"]["pid"])


def clients_per_worker(base: str, workers: int = 2, tries: int = 80) -> dict[int, httpx.Client]:
    """One kept-alive client on each worker, by pid (new connections until every worker was met)."""
    found: dict[int, httpx.Client] = {}
    for _ in range(tries):
        client = httpx.Client(base_url=base, timeout=30)
        pid = worker_pid(client)
        if pid in found:
            client.close()
        else:
            found[pid] = client
        if len(found) == workers:
            return found
    raise AssertionError(f"{tries} connections met only the workers {sorted(found)}")


def chat(client: httpx.Client, key: str, model: str = "echo/echo") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    return client.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body)


@pytest.fixture
def served(tmp_path: Path) -> Any:
    with ServeProcess(CONFIG, tmp_path) as gateway:
        yield gateway


def test_two_workers_answer_on_one_port_and_a_crashed_one_comes_back(served: ServeProcess) -> None:
    clients = clients_per_worker(served.base)
    supervisor = served.process.pid if served.process else 0
    for pid, client in clients.items():
        assert pid != supervisor
        assert chat(client, ADMIN_KEY).json()["choices"][0]["message"]["content"] == "You said: hello"
    scraped = next(iter(clients.values())).get("/metrics").text  # one scrape shows both workers, labelled
    deadline = time.monotonic() + 15
    while 'worker="1"' not in scraped or 'worker="0"' not in scraped:
        assert time.monotonic() < deadline, scraped[-2000:]
        time.sleep(0.5)
        scraped = next(iter(clients.values())).get("/metrics").text
    assert "minigate_requests_total{worker=" in scraped
    victim = next(iter(clients))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not any(r.get("event") == "worker_restart" for r in served.log_records()):
        assert time.monotonic() < deadline, served.log_text()[-3000:]
        time.sleep(0.2)
    back = clients_per_worker(served.base)  # two workers again, the killed one replaced
    assert victim not in back and len(back) == 2
    for client in [*clients.values(), *back.values()]:
        client.close()


def test_two_workers_share_one_rate_limit(served: ServeProcess) -> None:
    made = served.admin("POST", "/admin/api/keys", json={"name": "k", "policy": {"rpm": 3}})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    one, two = clients_per_worker(served.base).values()
    if time.time() % 60 > 45:  # the three requests and the refusals must share one minute
        time.sleep(60.5 - time.time() % 60)
    assert [chat(one, key).status_code, chat(one, key).status_code] == [200, 200]
    time.sleep(2.5)  # both workers have synced their counters through the database (every second)
    third = chat(two, key)
    assert third.status_code == 200 and third.headers["x-ratelimit-remaining-requests"] == "0"
    refused = chat(two, key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    time.sleep(2.5)
    assert chat(one, key).json()["error"]["code"] == "rate_limit_exceeded"  # the other worker's request counted
    one.close()
    two.close()


def test_sigterm_drains_an_in_flight_stream_in_every_worker(served: ServeProcess) -> None:
    outcome = Outcome()
    words = " ".join(["word"] * 8)  # 10 words at 0.3 s: about 3 s of stream
    reader = threading.Thread(target=stream, args=(served.url, "slow/echo", outcome, words), daemon=True)
    reader.start()
    assert outcome.first.wait(15), outcome.failure
    started = time.monotonic()
    served.signal(signal.SIGTERM)
    assert served.wait(40) == 0
    reader.join(5)
    assert outcome.ending == "done"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in outcome.events[:-1]).count("word") == 8
    assert time.monotonic() - started < 30
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{served.base}/health", timeout=2)
    stopped = [r for r in served.log_records() if "stopped (exit code" in str(r.get("msg"))]
    assert len(stopped) == 2, served.log_text()[-3000:]


def test_admin_reload_reaches_every_worker(served: ServeProcess) -> None:
    clients = clients_per_worker(served.base)
    # The file changes unseen by the file watchers: same size, same inode, same modification time.
    before = served.config_path.stat()
    text = served.config_path.read_text()
    with served.config_path.open("r+") as file:
        file.write(text.replace('"aaaaa"', '"shout"'))
    os.utime(served.config_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(1.5)
    assert all(chat(client, ADMIN_KEY, "shout").status_code == 404 for client in clients.values())
    answer = next(iter(clients.values())).post("/admin/reload", headers=AUTH)
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    for client in clients.values():  # the other worker reloads too (SIGHUP through the supervisor)
        while chat(client, ADMIN_KEY, "shout").status_code != 200:
            assert time.monotonic() < deadline, served.log_text()[-3000:]
            time.sleep(0.1)
        client.close()


def test_a_cooldown_in_one_worker_is_honoured_by_the_other(tmp_path: Path) -> None:
    from tests.fakes.upstream import FakeUpstream, Status

    with FakeUpstream("up", api_key="up-key") as upstream:
        up = {"endpoint": upstream.url, "models": ["gpt"], "auth": {"type": "api_key", "value": "up-key"}}
        config = {
            "agents": {"defaults": {"model": {"primary": "up/gpt", "fallbacks": ["echo/echo"]}}},
            "models": {"providers": {"up": up, "echo": {"type": "fake", "models": ["echo"]}}},
            "server": {"workers": 2},
        }
        with ServeProcess(config, tmp_path) as served:
            one, two = clients_per_worker(served.base).values()
            upstream.script(Status(429, headers={"retry-after": "30"}))
            first = chat(one, ADMIN_KEY, "default")
            assert first.status_code == 200 and first.headers["x-minigate-fallbacks"] == "1"
            time.sleep(2.5)  # both workers sync their cooldowns through the SQLite database once a second
            for client in (one, two):
                answer = chat(client, ADMIN_KEY, "default")
                assert answer.status_code == 200 and answer.headers["x-minigate-provider"] == "echo"
                client.close()
            assert len(upstream.requests) == 1  # the other worker never called the rate-limited upstream

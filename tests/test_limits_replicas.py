"""A key's limits hold across two ``minigate serve`` replicas on one PostgreSQL database.

Each replica counts in memory and syncs with the ``key_counters`` and ``key_leases`` tables once a second, so what
one replica admitted is refused by the other after a sync. PostgreSQL comes from :mod:`tests.pgserver`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL

from tests.gateway_server import ADMIN_KEY
from tests.test_replicas import Replica, _rows, databases, shared_db

__all__ = ["databases", "shared_db"]  # the PostgreSQL fixtures, shared with tests/test_replicas.py

CONFIG: dict[str, Any] = {
    "agents": {"defaults": {"model": {"primary": "echo/echo"}}},
    "models": {"providers": {"echo": {"type": "fake", "models": ["echo"]}, "slow": {"type": "fake", "delay": 0.5}}},
}
SYNCED = 2.5  # seconds: both replicas have synced at least once (every second)


def _key(replica: Replica, policy: dict[str, Any]) -> str:
    made = replica.http.post(
        "/admin/api/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"}, json={"name": "k", "policy": policy}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


def _code(answer: httpx.Response) -> str | None:
    return answer.json()["error"]["code"] if answer.status_code != 200 else None


def _two(tmp_path: Path, shared_db: URL) -> tuple[Replica, Replica]:
    url = shared_db.set(drivername="postgresql").render_as_string(hide_password=False)
    a, b = Replica(tmp_path / "a", url, CONFIG), Replica(tmp_path / "b", url, CONFIG)
    a.wait_ready()
    b.wait_ready()
    return a, b


def test_rate_limit_and_budget_shared_by_two_replicas(tmp_path: Path, shared_db: URL) -> None:
    a, b = _two(tmp_path, shared_db)
    try:
        if time.time() % 60 > 45:  # the requests per minute must share one minute
            time.sleep(60.5 - time.time() % 60)
        per_minute = _key(a, {"rpm": 3})
        budget = _key(b, {"daily_tokens": 8})  # "hello" is answered "You said: hello": 4 tokens a request
        assert [a.chat(per_minute).status_code, a.chat(per_minute).status_code] == [200, 200]
        assert [a.chat(budget).status_code, a.chat(budget).status_code] == [200, 200]  # 4 of 8: the last that fits
        time.sleep(SYNCED)
        third = b.chat(per_minute)
        assert third.status_code == 200
        assert third.headers["x-ratelimit-remaining-requests"] == "0"
        assert _code(b.chat(per_minute)) == "rate_limit_exceeded"
        assert _code(b.chat(budget)) == "budget_exceeded"
        time.sleep(SYNCED)
        assert _code(a.chat(per_minute)) == "rate_limit_exceeded"  # b's third request counts on a too
        assert _code(a.chat(budget)) == "budget_exceeded"
        tokens = _rows(shared_db, "SELECT tokens FROM key_counters WHERE period LIKE 'd:%' ORDER BY tokens")
        assert tokens == [(8,), (12,)]  # the per-minute key's three answers and the budget key's two
    finally:
        a.stop()
        b.stop()


def test_concurrency_shared_by_two_replicas(tmp_path: Path, shared_db: URL) -> None:
    a, b = _two(tmp_path, shared_db)
    try:
        key = _key(a, {"concurrency": 1})
        words = " ".join(["word"] * 12)  # 14 words at 0.5 s: about 7 s in flight on a
        done: list[int] = []

        def slow() -> None:
            body = {"model": "slow/echo", "stream": True, "messages": [{"role": "user", "content": words}]}
            answer = a.http.post(
                "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body, timeout=30
            )
            done.append(answer.status_code)

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(SYNCED)
        busy = b.chat(key)
        assert busy.status_code == 429
        assert busy.json()["error"]["message"] == "Rate limit reached: 1 requests at once."
        assert _rows(shared_db, "SELECT in_flight FROM key_leases") == [(1,)]
        thread.join(30)
        assert done == [200]
        time.sleep(SYNCED)  # a's lease is gone after its next sync
        assert b.chat(key).status_code == 200
        assert _rows(shared_db, "SELECT count(*) FROM key_leases") in ([(0,)], [(1,)])  # b's own, if not yet synced
    finally:
        a.stop()
        b.stop()

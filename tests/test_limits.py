"""A key's rate limits and budgets in one process (SQLite), at their edges: the request that fits exactly, the next.

The fake provider's answer to "hi there" is "You said: hi there": 2 prompt and 4 completion tokens, 6 in all; priced
at $0.10 a token here, it costs $0.60.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

PRICED: dict[str, Any] = {
    "agents": {"defaults": {"model": {"primary": "local/echo"}}},
    "models": {
        "providers": {"local": {"type": "fake", "models": ["echo"]}, "slow": {"type": "fake", "delay": 0.3}},
        "prices": {"local/echo": {"input": 100_000, "output": 100_000}},
    },
}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def new_key(app: InProcessGateway, policy: dict[str, Any]) -> tuple[int, str]:
    made = app.http.post("/admin/api/keys", headers=ADMIN, json={"name": "k", "policy": policy}).json()
    return int(made["id"]), str(made["key"])


def chat(app: InProcessGateway, key: str, model: str = "default", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi there"}], **extra}
    return app.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body)


def in_flight(app: InProcessGateway) -> int:
    return int(app.http.get("/admin/api/keys", headers=ADMIN).json()["keys"][0]["used"]["in_flight"])


def away_from_minute_end() -> None:
    """Wait out the end of a minute, so a test's requests share one fixed window."""
    if time.time() % 60 > 50:
        time.sleep(60.5 - time.time() % 60)


def test_requests_per_minute(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(PRICED)
    _, key = new_key(app, {"rpm": 2})
    away_from_minute_end()
    first, second, third = chat(app, key), chat(app, key), chat(app, key)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert third.status_code == 429
    assert third.json()["error"] == {
        "message": "Rate limit reached: 2 requests per minute.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(app.wait_rows(2)) == 2  # the refused request reached no provider
    assert chat(app, ADMIN_KEY).status_code == 200  # another key is not limited


def test_tokens_per_minute(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(PRICED)
    _, key = new_key(app, {"tpm": 7})
    away_from_minute_end()
    assert chat(app, key).headers["x-ratelimit-remaining-tokens"] == "7"
    second = chat(app, key)  # 6 tokens so far, under 7: admitted, and it overshoots by its own size
    assert second.status_code == 200
    assert second.headers["x-ratelimit-remaining-tokens"] == "1"
    third = chat(app, key)
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert third.json()["error"]["type"] == "tokens"
    assert third.headers["x-ratelimit-remaining-tokens"] == "0"


def test_daily_token_budget_until_an_admin_raises_it(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(PRICED)
    key_id, key = new_key(app, {"daily_tokens": 12})
    assert chat(app, key).status_code == 200
    assert chat(app, key).status_code == 200  # 6 of 12 used: fits, and uses exactly the rest
    stopped = chat(app, key)
    assert stopped.status_code == 429
    assert stopped.json()["error"]["code"] == "budget_exceeded"
    assert stopped.json()["error"]["type"] == "insufficient_quota"
    assert "daily token budget (12 tokens)" in stopped.json()["error"]["message"]
    assert 0 < int(stopped.headers["retry-after"]) <= 86_400  # the end of the UTC day
    assert chat(app, key).status_code == 429  # stays stopped
    raised = app.http.patch(f"/admin/api/keys/{key_id}", headers=ADMIN, json={"policy": {"daily_tokens": 13}})
    assert raised.json()["used"]["day_tokens"] == 12
    assert chat(app, key).status_code == 200


def test_money_budget_from_the_price_table(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(PRICED)
    key_id, key = new_key(app, {"monthly_usd": 1.2})
    assert chat(app, key).status_code == 200
    assert chat(app, key).status_code == 200  # $0.60 of $1.20 used
    stopped = chat(app, key)
    assert stopped.status_code == 429
    assert stopped.json()["error"]["code"] == "budget_exceeded"
    assert "monthly budget ($1.2)" in stopped.json()["error"]["message"]
    assert [round(r["cost"], 6) for r in app.wait_rows(2)] == [0.6, 0.6]
    # the same key on an unpriced local model spends tokens but no money; the budget still stops it
    assert chat(app, key, "slow/echo").status_code == 429
    app.http.patch(f"/admin/api/keys/{key_id}", headers=ADMIN, json={"policy": {"monthly_usd": 5}})
    assert chat(app, key, "slow/echo").status_code == 200
    assert app.wait_rows(3)[-1]["cost"] == 0.0  # a local model is free unless priced


def test_concurrent_requests(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(PRICED)
    _, key = new_key(app, {"concurrency": 1})
    results: list[int] = []
    slow = threading.Thread(target=lambda: results.append(chat(app, key, "slow/echo", stream=True).status_code))
    slow.start()  # 0.3 s between words: about 1.5 s in flight
    deadline = time.monotonic() + 5
    while not in_flight(app) and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = chat(app, key)
    assert busy.status_code == 429
    assert busy.json()["error"]["message"] == "Rate limit reached: 1 requests at once."
    assert busy.headers["retry-after"] == "1"
    slow.join(10)
    assert results == [200]
    assert chat(app, key).status_code == 200  # the slot is free again
    assert chat(app, key).status_code == 200

"""Refused requests (401, 403, 429 before any upstream) as usage rows, in process: each status with its code, key,
client and model; the Anthropic and Responses edges; a flood of bad keys leaves a bounded number of rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from minigate.gateway.ops.refusals import OVERFLOW
from minigate.gateway.runtime.gateway import Gateway
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

CONFIG: dict[str, Any] = {
    "agents": {"defaults": {"model": {"primary": "local/echo"}}},
    "models": {"providers": {"local": {"type": "fake", "models": ["echo", "other"]}}},
}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def app(inprocess_factory: Callable[..., InProcessGateway]) -> InProcessGateway:
    """A gateway with one fake local provider."""
    return inprocess_factory(CONFIG)


def new_key(app: InProcessGateway, policy: dict[str, Any] | None = None) -> tuple[int, str]:
    """A key made through the admin API: ``(id, key)``."""
    answer = app.http.post("/admin/api/keys", headers=ADMIN, json={"name": "k", "policy": policy})
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"]), str(answer.json()["key"])


def chat(app: InProcessGateway, key: str, model: str = "default") -> httpx.Response:
    return app.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi there"}]},
    )


def refused_rows(app: InProcessGateway) -> list[dict[str, Any]]:
    """Store what the gateway has counted, then every refused row."""

    async def flush(gateway: Gateway) -> int:
        return await gateway.refusals.flush(everything=True)

    app.run(flush)
    return app.rows("refused IS NOT NULL")


def test_a_bad_key_gets_a_row_without_a_key(app: InProcessGateway) -> None:
    assert chat(app, "mg-not-a-key-at-all-0123456789").status_code == 401
    assert app.http.get("/v1/models", headers={"authorization": "Bearer nope"}).status_code == 401
    rows = refused_rows(app)
    assert {(r["status"], r["error"], r["key_id"], r["endpoint"], r["refused"]) for r in rows} == {
        (401, "invalid_api_key", None, "chat/completions", 1),
        (401, "invalid_api_key", None, "models", 1),
    }
    assert all(r["client"] for r in rows)  # the client's address
    assert all(r["total_tokens"] is None and r["cost"] is None for r in rows)


def test_a_model_the_key_may_not_use_is_a_403_row_with_the_key_and_the_model(app: InProcessGateway) -> None:
    key_id, key = new_key(app, {"models": ["local/echo"]})
    assert chat(app, key, "local/echo").status_code == 200
    assert chat(app, key, "local/other").status_code == 403
    assert chat(app, key, "local/other").status_code == 403
    rows = refused_rows(app)
    assert [(r["status"], r["error"], r["key_id"], r["requested_model"], r["refused"]) for r in rows] == [
        (403, "model_not_allowed", key_id, "local/other", 2)
    ]
    served = app.rows("refused IS NULL")
    assert [(r["status"], r["key_id"]) for r in served] == [(200, key_id)]  # the served request: its own row


def test_rate_limits_and_budgets_are_429_rows_with_their_codes(app: InProcessGateway) -> None:
    limited_id, limited = new_key(app, {"rpm": 1})
    assert chat(app, limited).status_code == 200
    assert chat(app, limited).status_code == 429
    budget_id, budget = new_key(app, {"daily_tokens": 1})
    assert chat(app, budget).status_code == 200  # admitted on what was counted before: nothing
    answer = chat(app, budget)
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "budget_exceeded"
    rows = refused_rows(app)
    assert sorted((r["status"], r["error"], r["key_id"], r["refused"]) for r in rows) == [
        (429, "budget_exceeded", budget_id, 1),
        (429, "rate_limit_exceeded", limited_id, 1),
    ]


def test_the_anthropic_and_responses_edges_record_refusals_too(app: InProcessGateway) -> None:
    message = {"model": "default", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    assert app.http.post("/v1/messages", headers={"x-api-key": "bad"}, json=message).status_code == 401
    key_id, key = new_key(app, {"models": ["local/echo"]})
    asked = {"model": "local/other", "input": "hi"}
    assert app.http.post("/v1/responses", headers={"authorization": f"Bearer {key}"}, json=asked).status_code == 403
    rows = refused_rows(app)
    assert sorted((r["endpoint"], r["status"], r["error"], r["key_id"]) for r in rows) == [
        ("messages", 401, "invalid_api_key", None),
        ("responses", 403, "model_not_allowed", key_id),
    ]


def test_a_flood_of_bad_keys_leaves_a_few_rows_with_the_right_count(app: InProcessGateway) -> None:
    for n in range(2000):
        assert chat(app, f"mg-bad-{n:06d}-padding-padding").status_code == 401
    rows = refused_rows(app)
    assert 1 <= len(rows) <= 3  # one per minute the flood lasted
    assert sum(r["refused"] for r in rows) == 2000
    assert {r["error"] for r in rows} == {"invalid_api_key"}


def test_distinct_refusals_beyond_the_cap_share_one_overflow_row(app: InProcessGateway) -> None:
    async def cap(gateway: Gateway) -> None:
        gateway.refusals.max_entries = 10

    app.run(cap)
    _, key = new_key(app, {"models": ["local/echo"]})
    for n in range(30):  # thirty different models asked: thirty different rows, were it not for the cap
        assert chat(app, key, f"local/nope-{n}").status_code == 403
    rows = refused_rows(app)
    assert sum(r["refused"] for r in rows) == 30
    overflow = [r for r in rows if r["error"] == OVERFLOW]
    assert len(rows) - len(overflow) <= 10 * 2  # at most the cap per minute (two minutes if the test spans one)
    assert overflow and all(r["key_id"] is None and r["status"] == 403 for r in overflow)


def test_refused_rows_are_stored_at_shutdown(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(CONFIG)
    assert chat(app, "bad").status_code == 401
    app.stop()
    rows = app.rows("refused IS NOT NULL")
    assert [(r["status"], r["refused"]) for r in rows] == [(401, 1)]


def test_the_admin_usage_api_shows_refused_rows_apart(app: InProcessGateway) -> None:
    assert chat(app, ADMIN_KEY).status_code == 200
    for _ in range(4):
        assert chat(app, "bad").status_code == 401
    refused_rows(app)
    page = app.http.get("/admin/api/usage", headers=ADMIN, params={"status": "refused"}).json()
    assert [(r["status"], r["refused"], r["outcome"], r["error"]) for r in page["rows"]] == [
        (401, 4, "refused", "invalid_api_key")
    ]
    assert page["rows"][0]["client"]
    everything = app.http.get("/admin/api/usage", headers=ADMIN).json()["rows"]
    assert sorted(r["outcome"] for r in everything) == ["ok", "refused"]
    summary = app.http.get("/admin/api/usage/summary", headers=ADMIN, params={"group_by": "agent"}).json()
    assert (summary["total"]["requests"], summary["total"]["refused"], summary["total"]["errors"]) == (5, 4, 0)


def test_the_websocket_records_refusals_too(app: InProcessGateway) -> None:
    """A bad key (header or auth frame), a model the key may not use and its rate limit, on ``/v1/ws``, are rows
    as on HTTP; the request the key may make is a usage row of its own."""
    with app.http.websocket_connect("/v1/ws", headers={"authorization": "Bearer mg-bad"}) as socket:
        assert socket.receive_json()["error"]["code"] == "invalid_api_key"
    with app.http.websocket_connect("/v1/ws") as socket:
        socket.send_json({"type": "auth", "api_key": "mg-also-bad"})
        assert socket.receive_json()["error"]["code"] == "invalid_api_key"
    key_id, key = new_key(app, {"models": ["local/echo"], "rpm": 1})
    with app.http.websocket_connect("/v1/ws", headers={"authorization": f"Bearer {key}"}) as socket:
        body = {"messages": [{"role": "user", "content": "hi"}]}
        for ident, model in (("a", "local/other"), ("b", "local/echo"), ("c", "local/echo")):
            socket.send_json({"type": "chat", "id": ident, "request": {**body, "model": model}})
            frame = socket.receive_json()
            while frame["type"] == "delta":
                frame = socket.receive_json()
            assert frame["id"] == ident
            assert (frame["type"], frame.get("status")) == {"a": ("error", 403), "b": ("done", None)}.get(
                ident, ("error", 429)
            ), frame
    rows = refused_rows(app)
    assert sorted((r["endpoint"], r["status"], r["error"], r["key_id"], r["requested_model"]) for r in rows) == [
        ("ws", 401, "invalid_api_key", None, ""),  # no model asked yet
        ("ws", 403, "model_not_allowed", key_id, "local/other"),
        ("ws", 429, "rate_limit_exceeded", key_id, "local/echo"),
    ]
    assert [r["refused"] for r in rows if r["status"] == 401] == [2]
    assert all(r["client"] for r in rows)
    assert [(r["status"], r["key_id"]) for r in app.rows("refused IS NULL")] == [(200, key_id)]

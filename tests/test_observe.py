"""Request ids on every response, /metrics in Prometheus text format, and /ready, through the gateway in process."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import two_provider_config
from tests.fakes.upstream import FakeUpstream, Reply, Status
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
HELLO = [{"role": "user", "content": "hello"}]


def chat(inprocess_gateway: InProcessGateway, model: str = "default", **kwargs: object) -> httpx.Response:
    body = {"model": model, "messages": HELLO, **kwargs}
    return inprocess_gateway.http.post(f"{inprocess_gateway.url}/chat/completions", headers=AUTH, json=body, timeout=10)


def metrics(inprocess_gateway: InProcessGateway) -> dict[str, float]:
    """Every sample of GET /metrics as ``{'name{labels}': value}`` (checks the text format on the way)."""
    response = inprocess_gateway.http.get(inprocess_gateway.url.removesuffix("/v1") + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) minigate_\w+ .+", line), line
            continue
        name, value = line.rsplit(" ", 1)
        assert re.fullmatch(r'minigate_\w+(\{(\w+="[^"]*",?)*\})?', name), line
        samples[name] = float(value)
    return samples


def test_every_response_has_a_request_id_and_a_good_incoming_one_is_kept(inprocess_gateway: InProcessGateway) -> None:
    base = inprocess_gateway.url.removesuffix("/v1")
    responses = {
        "ok": chat(inprocess_gateway),
        "stream": chat(inprocess_gateway, stream=True),
        "bad key": inprocess_gateway.http.post(
            f"{inprocess_gateway.url}/chat/completions", json={}, headers={"authorization": "Bearer no"}
        ),
        "bad body": inprocess_gateway.http.post(
            f"{inprocess_gateway.url}/chat/completions", content=b"{", headers=AUTH
        ),
        "no model": chat(inprocess_gateway, model="nothing-routes-this"),
        "no path": inprocess_gateway.http.get(f"{base}/no/such/path"),
        "wrong method": inprocess_gateway.http.get(f"{inprocess_gateway.url}/chat/completions", headers=AUTH),
        "health": inprocess_gateway.http.get(f"{base}/health"),
        "web": inprocess_gateway.http.get(f"{base}/login"),
    }
    statuses = {name: r.status_code for name, r in responses.items()}
    assert statuses == {
        "ok": 200,
        "stream": 200,
        "bad key": 401,
        "bad body": 400,
        "no model": 404,
        "no path": 404,
        "wrong method": 405,
        "health": 200,
        "web": 200,
    }
    ids = [r.headers.get_list("x-request-id") for r in responses.values()]
    assert all(len(found) == 1 and re.fullmatch(r"[0-9a-f]{32}", found[0]) for found in ids), ids
    assert len({found[0] for found in ids}) == len(ids)
    assert responses["no model"].json()["error"]["code"] == "model_not_found"
    # The usage row carries the id the client saw.
    stored = {row["request_id"] for row in inprocess_gateway.rows()}
    assert {responses["ok"].headers["x-request-id"], responses["stream"].headers["x-request-id"]} <= stored

    mine = inprocess_gateway.http.post(
        f"{inprocess_gateway.url}/chat/completions",
        headers={**AUTH, "x-request-id": "client-trace.42:a_b"},
        json={"model": "default", "messages": HELLO},
    )
    assert mine.headers["x-request-id"] == "client-trace.42:a_b"
    assert inprocess_gateway.rows()[-1]["request_id"] == "client-trace.42:a_b"
    for bad in ("has spaces in it", "x" * 65, "-leading-dash", 'quote"d'):
        answer = inprocess_gateway.http.get(f"{base}/health", headers={"x-request-id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"]), bad


def test_metrics_count_requests_tokens_latency_and_fallbacks(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    assert chat(inprocess_gateway).status_code == 200
    primary.script(Status(500))
    assert chat(inprocess_gateway).headers["x-minigate-provider"] == "backup"
    backup.set_default(Reply(chunks=4))
    assert chat(inprocess_gateway, model="coder", stream=True).status_code == 200
    assert chat(inprocess_gateway, model="backup/anything-a-client-says").status_code == 200
    assert chat(inprocess_gateway, model="no-such-model").status_code == 404
    m = metrics(inprocess_gateway)
    assert m['minigate_requests_total{endpoint="chat/completions",status="200",provider="primary"}'] == 1
    assert m['minigate_requests_total{endpoint="chat/completions",status="200",provider="backup"}'] == 3
    assert m['minigate_requests_total{endpoint="chat/completions",status="404",provider="none"}'] == 1
    assert m['minigate_fallbacks_total{provider="primary",error_class="UpstreamStatusError",code="http_500"}'] == 1
    assert m['minigate_tokens_total{provider="primary",model="gpt-4o-mini",kind="completion"}'] == 3
    assert m['minigate_tokens_total{provider="backup",model="qwen-coder",kind="completion"}'] == 4
    assert m['minigate_tokens_total{provider="backup",model="llama3-8b",kind="prompt"}'] == 1
    # A model name only a client named is not a label value.
    assert m['minigate_tokens_total{provider="backup",model="other",kind="completion"}'] == 4
    assert not [k for k in m if "anything-a-client-says" in k or "no-such-model" in k]
    count = m['minigate_request_duration_seconds_count{endpoint="chat/completions",provider="backup"}']
    assert count == 3
    assert m['minigate_request_duration_seconds_bucket{endpoint="chat/completions",provider="backup",le="+Inf"}'] == 3
    assert m['minigate_time_to_first_token_seconds_count{provider="backup",model="qwen-coder"}'] == 1
    assert m['minigate_deployments_cooling{provider="primary"}'] == 0
    assert m["minigate_in_flight_requests"] == 0 and m["minigate_shutting_down"] == 0


@pytest.mark.slow  # waits out a 1 s cooldown
def test_ready_follows_the_default_chain(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    inprocess_gateway = inprocess_factory(
        two_provider_config(primary, backup, cooldown={"failures": 1, "initial": 1.0})
    )
    base = inprocess_gateway.url.removesuffix("/v1")
    ready = inprocess_gateway.http.get(f"{base}/ready")
    assert ready.status_code == 200
    checks = {"accepting": True, "database": True, "default_chain": True, "usage_stored": True}
    assert ready.json() == {"status": "ready", "checks": checks}
    primary.set_default(Status(503))
    backup.set_default(Status(503))
    assert chat(inprocess_gateway).status_code == 502  # both fail once: both cool down for 1 s
    not_ready = inprocess_gateway.http.get(f"{base}/ready")
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["default_chain"] is False
    assert not_ready.json()["reason"] == "no deployment of the default chain is usable"
    m = metrics(inprocess_gateway)
    assert m['minigate_deployments_cooling{provider="primary"}'] == 1
    assert m['minigate_deployments_cooling{provider="backup"}'] == 1
    time.sleep(1.1)
    assert inprocess_gateway.http.get(f"{base}/ready").status_code == 200


@pytest.mark.parametrize("path", ["/metrics", "/ready", "/health"])
def test_operational_endpoints_need_no_key_and_answer_json_or_text(
    inprocess_gateway: InProcessGateway, path: str
) -> None:
    response = inprocess_gateway.http.get(inprocess_gateway.url.removesuffix("/v1") + path)
    assert response.status_code == 200 and response.headers["x-request-id"]

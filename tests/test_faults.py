"""Upstream faults through a real inprocess_gateway: what the client saw (status, OpenAI error shape, for streams which
chunks arrived and how the stream ended) and what was stored (the usage row: status, error, the hops with their
error class and code, tokens), read back with a sqlite3 connection of our own.

Every fault of issue 7 and where its test is (a reader can check the list is complete):

| fault                                       | test                                                               |
|---------------------------------------------|--------------------------------------------------------------------|
| upstream 429 with Retry-After               | test_fallback.py::test_retry_after_puts_the_deployment_on_cooldown |
|                                             | (JSON), test_stream_status_before_content_falls_back (stream),     |
|                                             | test_fallback.py::test_all_rate_limited_passes_429_with_retry_after|
| upstream 429 without Retry-After            | test_fallback.py::test_retryable_statuses_fall_back[429] (JSON),   |
|                                             | test_stream_status_before_content_falls_back (stream)              |
| upstream 500/502/503/504                    | test_fallback.py::test_retryable_statuses_fall_back (JSON),        |
|                                             | test_stream_status_before_content_falls_back (stream),             |
|                                             | test_every_deployment_failing_is_one_openai_error                  |
| connection refused                          | test_fallback.py::test_connection_refused_falls_back,              |
|                                             | test_refused_everywhere_is_a_502_naming_each_deployment            |
| connect timeout / read timeout              | test_fallback.py::test_connect_timeout_falls_back /                |
|                                             | test_read_timeout_falls_back; test_stream_faults_before_content    |
| reset after k chunks                        | test_mid_stream_faults_end_with_an_error_event[reset],             |
|                                             | test_stream_faults_before_content (k = 0)                          |
| stall longer than the idle timeout          | test_mid_stream_faults_end_with_an_error_event[stall],             |
|                                             | test_stream_faults_before_content[stall]                           |
| malformed SSE                               | test_mid_stream_faults_end_with_an_error_event[malformed],         |
|                                             | test_stream_faults_before_content[malformed]                       |
| missing [DONE]                              | test_missing_done_after_the_finish_chunk_is_a_complete_answer,     |
|                                             | test_mid_stream_faults_end_with_an_error_event[truncated]          |
| invalid JSON bodies (upstream)              | test_invalid_upstream_json_falls_back                              |
| invalid JSON bodies (client)                | test_invalid_client_bodies_lose_nothing; test_v1.py::              |
|                                             | test_errors_have_openai_shape                                      |
| local worker killed mid-stream              | providers/onnx/test_onnx_faults.py                                 |
| database file locked by another process     | test_faults_storage.py::test_database_locked_by_another_process    |
| disk full for the database                  | test_faults_storage.py::test_disk_full_keeps_rows_then_reports     |
| kill -9 of the gateway under load           | test_faults_storage.py::test_kill_9_under_load_keeps_answered_rows |
| client leaves after a hop failed (499)      | test_cancelled_call_stores_the_hops_that_failed_before             |
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import two_provider_config
from tests.fakes.upstream import (
    Delay,
    EndAfter,
    FakeUpstream,
    MalformedSSE,
    NoDone,
    ResetAfter,
    StallAfter,
    Status,
    StreamError,
)
from tests.gateway_server import ADMIN_KEY, GatewayServer, free_port
from tests.inprocess import InProcessGateway

# In process, but waiting out timeouts and cooldowns by design: not in the fast layer.
pytestmark = pytest.mark.slow

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]
ERROR_KEYS = {"message", "type", "param", "code"}


def stream(inprocess_gateway: InProcessGateway, **body: Any) -> tuple[httpx.Response, list[Any]]:
    """POST a streaming chat request; the response and its events (decoded JSON, or the string "[DONE]")."""
    payload = {"model": "default", "stream": True, "messages": MESSAGES, **body}
    with inprocess_gateway.http.stream(
        "POST", f"{inprocess_gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=30
    ) as r:
        if r.status_code != 200:
            r.read()
            return r, []
        lines = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    return r, [line if line == "[DONE]" else json.loads(line) for line in lines]


def post(inprocess_gateway: InProcessGateway, **body: Any) -> httpx.Response:
    """POST a JSON chat request."""
    payload = {"model": "default", "messages": MESSAGES, **body}
    return inprocess_gateway.http.post(
        f"{inprocess_gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=30
    )


def text_of(events: list[Any]) -> str:
    """The content the client was sent."""
    chunks = [e for e in events if isinstance(e, dict) and "choices" in e]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS and error["code"] == code, error
    assert "Traceback" not in response.text and response.headers["x-request-id"]
    return dict(error)


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Status(429, headers={"Retry-After": "1"}), 429),
        (Status(429), 429),
        (Status(500), 500),
        (Status(502), 502),
        (Status(503), 503),
        (Status(504), 504),
    ],
)
def test_stream_status_before_content_falls_back(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream, fault: Status, status: int
) -> None:
    primary.script(fault)
    r, events = stream(inprocess_gateway)
    assert r.status_code == 200 and r.headers["x-minigate-fallbacks"] == "1"
    assert text_of(events) == "Hello from backup" and events[-1] == "[DONE]"
    row = inprocess_gateway.row_of(r)
    assert (row["status"], row["provider"], row["streamed"], row["completion_tokens"]) == (200, "backup", 1, 3)
    [hop] = row["hops"]
    assert (hop["provider"], hop["status"], hop["class"], hop["code"]) == (
        "primary",
        status,
        "UpstreamStatusError",
        f"http_{status}" if status != 429 else "http_429",
    )


def test_every_deployment_failing_is_one_openai_error(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Status(500))
    backup.script(Status(503, {"message": "backup is overloaded"}))
    r = post(inprocess_gateway)
    error = assert_openai_error(r, 502, "all_deployments_failed")
    assert "primary/gpt-4o-mini: HTTP 500" in error["message"] and "backup is overloaded" in error["message"]
    row = inprocess_gateway.row_of(r)
    assert (row["status"], row["provider"], row["fallbacks"], row["total_tokens"]) == (502, None, 2, None)
    assert [(h["provider"], h["status"], h["code"]) for h in row["hops"]] == [
        ("primary", 500, "http_500"),
        ("backup", 503, "http_503"),
    ]


def test_refused_everywhere_is_a_502_naming_each_deployment(
    inprocess_factory: Any, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    config = two_provider_config(primary, backup)
    for name in ("primary", "backup"):
        config["models"]["providers"][name]["endpoint"] = f"http://127.0.0.1:{free_port()}/v1"
    inprocess_gateway = inprocess_factory(config)
    r, _ = stream(inprocess_gateway)
    error = assert_openai_error(r, 502, "all_deployments_failed")  # before any byte: a plain error response
    assert error["message"].count("cannot connect") == 2
    row = inprocess_gateway.row_of(r)
    assert row["status"] == 502 and row["streamed"] == 1
    assert [(h["class"], h["code"]) for h in row["hops"]] == [("UpstreamUnavailable", "upstream_unavailable")] * 2


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        pytest.param(ResetAfter(0), "upstream_unavailable", "connection broke", id="reset"),
        pytest.param(StallAfter(0, 5), "upstream_timeout", "timed out", id="stall"),
        pytest.param(MalformedSSE(0), "upstream_malformed", "malformed event", id="malformed"),
        pytest.param(EndAfter(0), "upstream_truncated", "ended before it finished", id="truncated"),
        pytest.param(Delay(5), "upstream_timeout", "timed out", id="read-timeout"),
    ],
)
def test_stream_faults_before_content(
    inprocess_gateway: InProcessGateway,
    primary: FakeUpstream,
    backup: FakeUpstream,
    fault: Any,
    code: str,
    message: str,
) -> None:
    # Nothing with content had reached the client, so the next deployment answers the whole stream.
    primary.script(fault)
    r, events = stream(inprocess_gateway)
    assert text_of(events) == "Hello from backup" and events[-1] == "[DONE]"
    assert not any("error" in e for e in events if isinstance(e, dict))
    row = inprocess_gateway.row_of(r)
    assert (row["status"], row["provider"], row["fallbacks"], row["completion_tokens"]) == (200, "backup", 1, 3)
    [hop] = row["hops"]
    assert hop["code"] == code and message in hop["error"], hop


@pytest.mark.parametrize(
    ("fault", "status", "code", "message"),
    [
        pytest.param(ResetAfter(2), 502, "upstream_unavailable", "connection broke mid-stream", id="reset"),
        pytest.param(StallAfter(2, 5), 502, "upstream_timeout", "timed out mid-stream", id="stall"),
        pytest.param(MalformedSSE(2), 502, "upstream_malformed", "malformed event", id="malformed"),
        pytest.param(EndAfter(2), 502, "upstream_truncated", "ended before it finished", id="truncated"),
        pytest.param(StreamError(2, {"message": "overloaded"}), 502, "upstream_error", "overloaded", id="error"),
    ],
)
def test_mid_stream_faults_end_with_an_error_event(
    inprocess_gateway: InProcessGateway,
    primary: FakeUpstream,
    backup: FakeUpstream,
    fault: Any,
    status: int,
    code: str,
    message: str,
) -> None:
    primary.script(fault)
    started = time.monotonic()
    r, events = stream(inprocess_gateway)
    assert time.monotonic() - started < 8  # the idle timeout is 2 s: never a hang
    assert r.status_code == 200 and r.headers["x-minigate-provider"] == "primary"
    # The two chunks sent before the fault arrived, in order, then one error event and nothing after it.
    assert text_of(events) == "Hello from"
    *chunks, last = events
    assert all("choices" in c and c["model"] == "primary/gpt-4o-mini" for c in chunks)
    assert set(last) == {"error"} and set(last["error"]) == ERROR_KEYS
    assert last["error"]["code"] == code and message in last["error"]["message"], last
    assert last["error"]["type"] == "upstream_error" and "Traceback" not in last["error"]["message"]
    assert backup.requests == []  # content had been sent: no fallback mid-answer
    row = inprocess_gateway.row_of(r)
    assert (row["status"], row["provider"], row["streamed"], row["fallbacks"]) == (status, "primary", 1, 0)
    assert message in row["error"] and row["ttft_ms"] is not None
    assert row["completion_tokens"] is None  # the upstream never said how many tokens it used


def test_missing_done_after_the_finish_chunk_is_a_complete_answer(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream
) -> None:
    # The finish chunk and the usage came, only [DONE] is missing: the answer is whole, and the client gets the
    # [DONE] the upstream left out.
    primary.script(NoDone(3))
    r, events = stream(inprocess_gateway)
    assert text_of(events) == "Hello from primary" and events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    row = inprocess_gateway.row_of(r)
    assert (row["status"], row["error"], row["prompt_tokens"], row["completion_tokens"]) == (200, None, 1, 3)


def test_invalid_upstream_json_falls_back(inprocess_factory: Any, primary: FakeUpstream, backup: FakeUpstream) -> None:
    inprocess_gateway = inprocess_factory(two_provider_config(primary, backup, cooldown={"failures": 100}))
    cases = [
        (MalformedSSE(), "answer is not JSON", "upstream_malformed"),
        (EndAfter(0), "answer is not JSON", "upstream_malformed"),  # a 200 whose body is cut off half-way
        (Status(500, body=b"<html>Internal Server Error</html>"), "Internal Server Error", "http_500"),
    ]
    for fault, message, code in cases:
        primary.script(fault)
        r = post(inprocess_gateway)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Hello from backup"
        row = inprocess_gateway.row_of(r)
        assert (row["status"], row["provider"], row["total_tokens"]) == (200, "backup", 4)
        [hop] = row["hops"]
        assert hop["code"] == code and message in hop["error"], hop
    backup.script(Status(200, body=b"[1, 2]"))  # JSON, but not an object
    primary.script(MalformedSSE())
    r = post(inprocess_gateway)
    error = assert_openai_error(r, 502, "all_deployments_failed")
    assert "not a JSON object" in error["message"]
    assert [h["code"] for h in inprocess_gateway.row_of(r)["hops"]] == ["upstream_malformed"] * 2


def test_invalid_client_bodies_lose_nothing(inprocess_gateway: InProcessGateway, primary: FakeUpstream) -> None:
    # Bad bodies sent between good requests are refused in OpenAI's shape before routing (so they store no row),
    # and cost the good requests around them nothing.
    bad = [b"{not json", b"", b'{"model": "default", "messages": "hi"}', b"\xff\xfe", b'{"model": "default"']
    answered: list[str] = []
    refused: list[httpx.Response] = []

    def good() -> None:
        answered.append(post(inprocess_gateway).headers["x-request-id"])

    threads = [threading.Thread(target=good) for _ in range(5)]
    for t in threads:
        t.start()
    for body in bad:
        headers = {**AUTH, "content-type": "application/json"}
        refused.append(
            inprocess_gateway.http.post(
                f"{inprocess_gateway.url}/chat/completions", content=body, headers=headers, timeout=30
            )
        )
    for t in threads:
        t.join(30)
    for r in refused:
        assert_openai_error(r, 400, r.json()["error"]["code"])
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert len(answered) == 5
    rows = inprocess_gateway.wait_rows(5)
    assert sorted(r["request_id"] for r in rows) == sorted(answered)
    assert all(r["status"] == 200 and r["total_tokens"] == 4 for r in rows)
    assert len(primary.requests) == 5


@pytest.mark.parametrize("streamed", [False, True])
def test_cancelled_call_stores_the_hops_that_failed_before(
    gateway: GatewayServer, primary: FakeUpstream, backup: FakeUpstream, streamed: bool
) -> None:
    # The primary fails at once; the client gives up while the backup is still thinking. The 499 row keeps the
    # primary's failure (it used to be stored with no hops at all for JSON calls).
    primary.script(Status(503))
    backup.script(Delay(3))
    payload = {"model": "default", "messages": MESSAGES, "stream": streamed}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=1.0)
    assert backup.wait_for_disconnect(5.0)
    [row] = gateway.wait_rows(1)
    assert (row["status"], row["provider"], row["fallbacks"], row["streamed"]) == (499, None, 1, int(streamed))
    [hop] = json.loads(row["hops"])
    assert (hop["provider"], hop["status"], hop["code"]) == ("primary", 503, "http_503")

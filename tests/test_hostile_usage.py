"""Hostile token counts from an upstream, through the gateway in process: huge, negative, boolean, string
and float counts, in JSON answers and in streamed usage chunks. Each is treated as missing (stored as NULL,
never counted, and left out of the usage the client is sent), logged once per deployment; the rows after it
are stored, /ready stays green and the token counter never goes backwards."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import one_provider_config
from tests.fakes import hostile
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]
HUGE = 10**30
INT64_MAX = 2**63 - 1

# (usage the upstream sends, the (prompt, completion, total) stored and sent to the client)
CASES: list[tuple[Any, tuple[int | None, int | None, int | None]]] = [
    ({"prompt_tokens": HUGE, "completion_tokens": 3, "total_tokens": HUGE + 3}, (None, 3, None)),
    ({"prompt_tokens": INT64_MAX, "completion_tokens": INT64_MAX, "total_tokens": INT64_MAX}, (None, None, None)),
    ({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": INT64_MAX}, (2, 3, 5)),
    ({"prompt_tokens": -1998674, "completion_tokens": 3, "total_tokens": -1998671}, (None, 3, None)),
    ({"prompt_tokens": True, "completion_tokens": False, "total_tokens": 1}, (None, None, 1)),
    ({"prompt_tokens": "12", "completion_tokens": "3", "total_tokens": "15"}, (None, None, None)),
    ({"prompt_tokens": 1.5, "completion_tokens": 3.0, "total_tokens": 4.5}, (None, None, None)),
    ({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 99}, (2, 3, 5)),  # made consistent
    ("lots", (None, None, None)),
]
FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


@pytest.fixture
def gateway(inprocess_factory: Callable[..., InProcessGateway], upstream: FakeUpstream) -> InProcessGateway:
    return inprocess_factory(one_provider_config(upstream))


def ask(gateway: InProcessGateway, streamed: bool) -> tuple[str, dict[str, Any] | None]:
    """One chat answered with "Hello...": its request id and the usage the client was sent."""
    payload: dict[str, Any] = {"model": "default", "messages": MESSAGES, "stream": streamed}
    if streamed:
        payload["stream_options"] = {"include_usage": True}
    with gateway.http.stream("POST", f"{gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=30) as r:
        assert r.status_code == 200, r.read()
        if not streamed:
            body = json.loads(r.read())
            assert body["choices"][0]["message"]["content"].startswith("Hello")
            return r.headers["x-request-id"], body.get("usage")
        lines = [line.removeprefix("data: ") for line in r.iter_lines() if line]
    assert lines[-1] == "[DONE]", lines
    chunks = [json.loads(line) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("Hello")
    usages = [c["usage"] for c in chunks if c.get("usage") is not None]
    return r.headers["x-request-id"], usages[-1] if usages else None


def stored(gateway: InProcessGateway, request_id: str) -> tuple[Any, ...]:
    """The token counts of one request's row, waiting (boundedly) for it to be committed."""
    row = gateway.row_of(request_id)
    return tuple(row[f] for f in FIELDS)


def metric(gateway: InProcessGateway, name: str, labels: str = "") -> float:
    """One value from /metrics (0 when the series does not exist yet)."""
    text = gateway.http.get("/metrics", timeout=10).text
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("usage", "expected"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_hostile_counts_are_treated_as_missing(
    gateway: InProcessGateway, upstream: FakeUpstream, usage: Any, expected: tuple[int | None, ...], streamed: bool
) -> None:
    upstream.script(hostile.usage_answer(usage))
    request_id, sent = ask(gateway, streamed)
    assert stored(gateway, request_id) == expected
    # The client is sent the same counts as were stored; a count treated as missing is left out (and a usage
    # that is not an object at all is sent as null).
    sent_counts = {f: sent[f] for f in FIELDS if f in sent} if isinstance(sent, dict) else {}
    assert sent_counts == {f: v for f, v in zip(FIELDS, expected, strict=True) if v is not None}
    assert isinstance(sent, dict) or usage == "lots"
    # The writer goes on: the next answer's row is stored with its real counts.
    after, _ = ask(gateway, streamed)
    assert stored(gateway, after) == (1, 3, 4)
    assert metric(gateway, "minigate_usage_rows_held") == 0
    assert metric(gateway, "minigate_usage_rows_lost") == 0
    assert gateway.http.get("/ready", timeout=10).status_code == 200


def test_bad_counts_are_logged_once_per_deployment(
    gateway: InProcessGateway, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for i in range(4):
        upstream.script(hostile.usage_answer({"prompt_tokens": -5, "completion_tokens": HUGE, "total_tokens": 1}))
        ask(gateway, streamed=i % 2 == 1)
    logged = [r for r in caplog.records if getattr(r, "event", None) == "usage_counts_invalid"]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    message = logged[0].getMessage()
    assert "up/m" in message and "prompt_tokens" in message and "completion_tokens" in message
    # What an operator's alert reads instead: every rejected count, by provider and field.
    labels = 'provider="up",field="prompt_tokens"'
    assert metric(gateway, "minigate_usage_counts_rejected_total", labels) == 4


def test_token_counter_never_goes_backwards(gateway: InProcessGateway, upstream: FakeUpstream) -> None:
    labels = 'provider="up",model="m",kind="prompt"'
    ask(gateway, streamed=False)
    seen = [metric(gateway, "minigate_tokens_total", labels)]
    for usage in (
        {"prompt_tokens": -1998674, "completion_tokens": 3, "total_tokens": -1998671},
        {"prompt_tokens": HUGE, "completion_tokens": 3},
        {"prompt_tokens": True, "completion_tokens": 3},
        {"prompt_tokens": 2.5, "completion_tokens": 3},
    ):
        upstream.script(hostile.usage_answer(usage))
        ask(gateway, streamed=False)
        seen.append(metric(gateway, "minigate_tokens_total", labels))
    ask(gateway, streamed=True)
    seen.append(metric(gateway, "minigate_tokens_total", labels))
    assert seen == [1.0, 1.0, 1.0, 1.0, 1.0, 2.0]


def test_a_workflow_sums_only_valid_counts(
    inprocess_factory: Callable[..., InProcessGateway], upstream: FakeUpstream
) -> None:
    twice = {
        "name": "twice",
        "steps": [
            {"type": "prompt_template", "template": "{{ input }}"},
            {"type": "llm_inference", "model": "default"},
            {"type": "llm_inference", "model": "default"},
        ],
        "triggers": [{"path": "/api/twice", "method": "POST"}],
    }
    config = {
        "agents": {"defaults": {"model": {"primary": "up/m"}}},
        "models": {"providers": {"up": {"endpoint": upstream.url, "timeout": 10}}},
        "workflows": [twice],
    }
    gateway = inprocess_factory(config)
    upstream.script(hostile.usage_answer({"prompt_tokens": "12", "completion_tokens": -3, "total_tokens": HUGE}))
    answer = gateway.http.post("/api/twice", headers=AUTH, json={"input": "hi"}, timeout=30)
    assert answer.status_code == 200, answer.text
    # The first step's counts are all invalid; the second's ("Hello" in, "Hello from up" out) are real.
    assert answer.json()["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    rows = gateway.wait_rows(2)
    assert [(r["prompt_tokens"], r["completion_tokens"], r["total_tokens"]) for r in rows] == [
        (None, None, None),
        (1, 3, 4),
    ]

"""One test per fallback class: which upstream answered, what the client got, what row was stored."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import two_provider_config
from tests.fakes.upstream import Delay, FakeUpstream, Reply, ResetAfter, StallAfter, Status, StreamError
from tests.gateway_server import ADMIN_KEY, GatewayServer, free_port
from tests.inprocess import InProcessGateway

# In process, but waiting out timeouts and cooldowns by design: not in the fast layer.
pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "hello"}]


def ask(inprocess_gateway: InProcessGateway, model: str = "default", **kwargs: Any) -> Any:
    return inprocess_gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, **kwargs
    )


def assert_backup_answered(
    inprocess_gateway: InProcessGateway,
    primary: FakeUpstream,
    backup: FakeUpstream,
    error_part: str,
    code: str | None = None,
) -> dict[str, Any]:
    """The backup answered the client; the row names it, its tokens, and the primary's failure (of ``code``)."""
    raw = ask(inprocess_gateway)
    assert raw.parse().choices[0].message.content == "Hello from backup"
    assert raw.headers["x-minigate-provider"] == "backup"
    assert raw.headers["x-minigate-fallbacks"] == "1"
    assert len(backup.requests) == 1
    [row] = inprocess_gateway.rows("request_id = ?", (raw.headers["x-request-id"],))
    assert (row["status"], row["provider"], row["model"], row["fallbacks"]) == (200, "backup", "llama3-8b", 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (1, 3, 4)
    [hop] = json.loads(row["hops"])
    assert hop["provider"] == "primary" and error_part in hop["error"], hop
    if code is not None:
        assert hop["code"] == code, hop
    return row


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses_fall_back(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream, status: int
) -> None:
    primary.script(Status(status))
    assert_backup_answered(inprocess_gateway, primary, backup, f"fake error {status}", f"http_{status}")
    assert len(primary.requests) == 1


def test_model_not_found_and_context_length_fall_back(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Status(404, {"message": "The model `gpt-4o-mini` does not exist", "code": "model_not_found"}))
    assert_backup_answered(inprocess_gateway, primary, backup, "does not exist")
    primary.script(
        Status(
            400,
            {
                "message": "This model's maximum context length is 8192 tokens",
                "code": "context_length_exceeded",
            },
        )
    )
    raw = ask(inprocess_gateway)
    assert raw.headers["x-minigate-provider"] == "backup"


def test_connection_refused_falls_back(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    config = two_provider_config(primary, backup)
    config["models"]["providers"]["primary"]["endpoint"] = f"http://127.0.0.1:{free_port()}/v1"
    inprocess_gateway = inprocess_factory(config)
    assert_backup_answered(inprocess_gateway, primary, backup, "cannot connect", "upstream_unavailable")


def test_connection_reset_falls_back(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(ResetAfter(0))
    assert_backup_answered(inprocess_gateway, primary, backup, "primary", "upstream_unavailable")


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full, so a new connection hangs until the connect timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(server.getsockname())
        fillers.append(c)
    yield server.getsockname()[1]
    for c in fillers:
        c.close()
    server.close()


def test_connect_timeout_falls_back(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream, backup: FakeUpstream, blackhole: int
) -> None:
    config = two_provider_config(primary, backup)
    config["models"]["providers"]["primary"].update(endpoint=f"http://127.0.0.1:{blackhole}/v1", connect_timeout=0.3)
    inprocess_gateway = inprocess_factory(config)
    started = time.monotonic()
    assert_backup_answered(inprocess_gateway, primary, backup, "timed out", "upstream_timeout")
    assert time.monotonic() - started < 2


def test_read_timeout_falls_back(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Delay(3))  # the provider's timeout is 2 s
    assert_backup_answered(inprocess_gateway, primary, backup, "timed out", "upstream_timeout")


@pytest.mark.parametrize("status", [400, 413, 422])
def test_client_errors_come_back_without_fallback(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream, status: int
) -> None:
    primary.script(Status(status, {"message": "bad field 'foo'", "param": "foo", "code": "invalid_value"}))
    with pytest.raises(openai.APIStatusError) as err:
        ask(inprocess_gateway)
    assert err.value.status_code == status
    assert err.value.body == {
        "message": "bad field 'foo'",
        "type": err.value.body["type"],
        "param": "foo",
        "code": "invalid_value",
    }  # type: ignore[index]
    assert backup.requests == []
    [row] = inprocess_gateway.rows()
    assert row["status"] == status and row["provider"] is None and "bad field" in row["error"]


def test_retry_after_puts_the_deployment_on_cooldown(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Status(429, headers={"Retry-After": "1"}))
    assert_backup_answered(inprocess_gateway, primary, backup, "fake error 429", "http_429")
    # While the primary asked us to wait, it is skipped without being called.
    assert ask(inprocess_gateway).headers["x-minigate-provider"] == "backup"
    assert len(primary.requests) == 1
    time.sleep(1.1)
    assert ask(inprocess_gateway).headers["x-minigate-provider"] == "primary"


def test_all_rate_limited_passes_429_with_retry_after(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Status(429, headers={"Retry-After": "7"}))
    backup.script(Status(429, headers={"Retry-After": "3"}))
    with pytest.raises(openai.RateLimitError) as err:
        ask(inprocess_gateway)
    assert err.value.response.headers["retry-after"] == "3"
    assert err.value.code == "rate_limit_exceeded" and err.value.type == "rate_limit_error"
    [row] = inprocess_gateway.rows()
    assert row["status"] == 429 and row["fallbacks"] == 2 and row["provider"] is None
    assert [(h["provider"], h["status"], h["code"]) for h in json.loads(row["hops"])] == [
        ("primary", 429, "http_429"),
        ("backup", 429, "http_429"),
    ]


def test_failing_primary_cools_down_and_traffic_returns(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    # After 2 failures in a row the primary cools 1 s, then 2 s; margins of at least 0.4 s keep a busy
    # machine from turning the timing into a flake.
    inprocess_gateway = inprocess_factory(
        two_provider_config(primary, backup, cooldown={"failures": 2, "initial": 1.0})
    )
    primary.set_default(Status(500))
    for _ in range(2):
        assert ask(inprocess_gateway).headers["x-minigate-provider"] == "backup"
    assert len(primary.requests) == 2
    assert ask(inprocess_gateway).headers["x-minigate-provider"] == "backup"
    assert len(primary.requests) == 2  # skipped while cooling
    time.sleep(1.4)
    assert ask(inprocess_gateway).headers["x-minigate-provider"] == "backup"
    assert len(primary.requests) == 3  # tried again after the cooldown, failed: now cools 2 s
    time.sleep(1.4)
    ask(inprocess_gateway)
    assert len(primary.requests) == 3  # the second cooldown is longer
    primary.set_default(Reply())
    time.sleep(1.0)
    assert ask(inprocess_gateway).headers["x-minigate-provider"] == "primary"
    assert ask(inprocess_gateway).headers["x-minigate-provider"] == "primary"


def test_one_deadline_covers_the_whole_chain(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    config = two_provider_config(primary, backup)
    config["router"]["timeout"] = 1.5
    inprocess_gateway = inprocess_factory(config)
    primary.script(Delay(1.0, then=Status(500)))
    backup.script(Delay(5))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        ask(inprocess_gateway)
    took = time.monotonic() - started
    assert err.value.status_code == 504 and 1.4 < took < 2.5
    [row] = inprocess_gateway.rows()
    assert row["status"] == 504 and row["fallbacks"] == 2


def stream_lines(inprocess_gateway: InProcessGateway, model: str = "default") -> tuple[httpx.Headers, list[str]]:
    with inprocess_gateway.http.stream(
        "POST",
        f"{inprocess_gateway.url}/chat/completions",
        timeout=10,
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        json={"model": model, "stream": True, "messages": MESSAGES},
    ) as r:
        return r.headers, [line for line in r.iter_lines() if line]


@pytest.mark.parametrize("fault", [Status(503), ResetAfter(0), StreamError(0, {"message": "overloaded"})])
def test_stream_falls_back_before_first_content(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream, fault: Any
) -> None:
    primary.script(fault)
    stream = inprocess_gateway.client().chat.completions.create(model="default", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from backup"
    [row] = inprocess_gateway.rows()
    assert (row["provider"], row["fallbacks"], row["status"], row["streamed"]) == ("backup", 1, 200, 1)
    assert row["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (ResetAfter(2), "connection broke"),
        (StreamError(2, {"message": "boom"}), "boom"),
        (StallAfter(2, 5), "timed out"),
    ],
)
def test_failure_after_first_content_ends_stream_with_error_event(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream, fault: Any, message: str
) -> None:
    primary.script(fault)
    started = time.monotonic()
    headers, lines = stream_lines(inprocess_gateway)
    assert time.monotonic() - started < 4  # the provider's idle timeout is 2 s: never a hang
    assert headers["x-minigate-provider"] == "primary"
    last = json.loads(lines[-1].removeprefix("data: "))
    assert set(last["error"]) == {"message", "type", "param", "code"} and message in last["error"]["message"]
    assert "data: [DONE]" not in lines and backup.requests == []
    [row] = inprocess_gateway.wait_rows(1)
    assert row["status"] >= 500 and row["provider"] == "primary" and message in row["error"]
    with pytest.raises(openai.APIError):
        primary.script(fault)
        list(inprocess_gateway.client().chat.completions.create(model="default", messages=MESSAGES, stream=True))


def test_client_disconnect_cancels_the_upstream_stream(gateway: GatewayServer, primary: FakeUpstream) -> None:
    primary.script(Reply(chunks=200, interval=0.05))
    with httpx.stream(
        "POST",
        f"{gateway.url}/chat/completions",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        json={"model": "default", "stream": True, "messages": MESSAGES},
    ) as r:
        for line in r.iter_lines():
            if "tok" in line:
                break
    assert primary.wait_for_disconnect(2.0)
    [row] = gateway.wait_rows(1)
    assert row["status"] == 499


def test_client_disconnect_cancels_a_json_request(gateway: GatewayServer, primary: FakeUpstream) -> None:
    primary.script(Delay(1.5))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.url}/chat/completions",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            json={"model": "default", "messages": MESSAGES},
            timeout=0.3,
        )
    assert primary.wait_for_disconnect(1.0)
    [row] = gateway.wait_rows(1)
    assert row["status"] == 499

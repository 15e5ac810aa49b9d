"""Hostile answer shapes from an upstream, through the gateway in process (a real one for the WebSocket): choices
that are strings, deltas and messages that are not objects, content that is a number. Each is refused as a
malformed upstream answer (a 502 in OpenAI's shape naming it, and a row saying so; the next deployment would be
tried) on /v1, plain and streamed, and over the WebSocket; nothing reaches a consumer that would trip over it, and
no traceback reaches the log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest

from tests.conftest import one_provider_config
from tests.fakes import hostile
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.inprocess import InProcessGateway

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]
GOOD_DELTA = {"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}

ANSWERS: dict[str, Any] = {
    "choices-string": {"object": "chat.completion", "choices": "abc"},
    "choice-string": {"object": "chat.completion", "choices": ["abc"]},
    "message-string": {"object": "chat.completion", "choices": [{"index": 0, "message": "abc"}]},
    "message-list": {"object": "chat.completion", "choices": [{"index": 0, "message": ["abc"]}]},
    "content-number": {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": 5}}]},
    "finish-number": {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": 7}],
    },
    "tool-calls-string": {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"content": None, "tool_calls": "x"}}],
    },
}
CHUNKS: dict[str, Any] = {
    "delta-string": {"choices": [{"index": 0, "delta": "abc"}]},
    "delta-list": {"choices": [{"index": 0, "delta": ["abc"]}]},
    "content-number": {"choices": [{"index": 0, "delta": {"content": 5}}]},
    "content-object": {"choices": [{"index": 0, "delta": {"content": {"a": 1}}}]},
    "tool-calls-string": {"choices": [{"index": 0, "delta": {"tool_calls": "x"}}]},
    "finish-list": {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": ["stop"]}]},
    "text-number": {"choices": [{"index": 0, "text": 12}]},
}


@pytest.fixture
def gateway(inprocess_factory: Callable[..., InProcessGateway], upstream: FakeUpstream) -> InProcessGateway:
    return inprocess_factory(one_provider_config(upstream))


@pytest.fixture
def socket_gateway(gateway_factory: Callable[..., GatewayServer], upstream: FakeUpstream) -> GatewayServer:
    """:func:`gateway` on a real socket, for the WebSocket."""
    return gateway_factory(one_provider_config(upstream))


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def check_refused(gateway: InProcessGateway, response: httpx.Response) -> None:
    assert response.status_code == 502, response.text
    error = response.json()["error"]  # the chain's error, naming what each deployment did wrong
    assert error["code"] == "all_deployments_failed" and "malformed" in error["message"], error
    [row] = gateway.wait_rows(1)
    assert row["status"] == 502


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_malformed_answer_is_a_502(
    gateway: InProcessGateway, upstream: FakeUpstream, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.script(hostile.shaped(answer, []))
    payload = {"model": "default", "messages": MESSAGES}
    check_refused(gateway, gateway.http.post(f"{gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=30))
    assert not tracebacks(caplog)


@pytest.mark.parametrize("chunk", CHUNKS.values(), ids=CHUNKS.keys())
def test_a_malformed_first_event_is_a_502(
    gateway: InProcessGateway, upstream: FakeUpstream, chunk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.script(hostile.shaped(None, [chunk]))
    payload = {"model": "default", "messages": MESSAGES, "stream": True}
    check_refused(gateway, gateway.http.post(f"{gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=30))
    assert not tracebacks(caplog)


@pytest.mark.parametrize("chunk", CHUNKS.values(), ids=CHUNKS.keys())
def test_a_malformed_later_event_ends_the_stream_with_an_error_event(
    gateway: InProcessGateway, upstream: FakeUpstream, chunk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.script(hostile.shaped(None, [{"choices": [GOOD_DELTA]}, chunk]))
    payload = {"model": "default", "messages": MESSAGES, "stream": True}
    response = gateway.http.post(f"{gateway.url}/chat/completions", headers=AUTH, json=payload, timeout=30)
    assert response.status_code == 200
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert '"Hi"' in events[0] and "upstream_malformed" in events[-1], events
    assert "[DONE]" not in events
    [row] = gateway.wait_rows(1)
    assert row["status"] == 502
    assert not tracebacks(caplog)


@pytest.mark.parametrize("chunk", CHUNKS.values(), ids=CHUNKS.keys())
async def test_the_websocket_gets_an_error_frame(
    socket_gateway: GatewayServer, upstream: FakeUpstream, chunk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.script(hostile.shaped(None, [{"choices": [GOOD_DELTA]}, chunk]))
    request = {"model": "default", "messages": MESSAGES}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
        http.ws_connect(f"ws://127.0.0.1:{socket_gateway.port}/v1/ws", headers=AUTH) as ws,
    ):
        await ws.send_json({"type": "chat", "id": "r1", "request": request})
        frames = []
        for _ in range(20):
            frames.append(await ws.receive_json(timeout=10))
            if frames[-1]["type"] in ("done", "error"):
                break
        assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == "upstream_malformed", frames
        await ws.send_json({"type": "ping"})  # the socket is still open and serving
        assert (await ws.receive_json(timeout=10))["type"] == "pong"
    assert not tracebacks(caplog)

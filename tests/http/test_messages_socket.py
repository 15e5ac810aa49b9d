"""``/v1/messages`` on a real socket, where the socket matters: the client leaving mid-answer cancels the upstream
call, a slow body gets the 408 in Anthropic's shape, and the official SDK streams over plain HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import one_provider_config
from tests.fakes.behaviours import Delay, Reply
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY, GatewayServer

HI: list[Any] = [{"role": "user", "content": "Hi"}]
BODY_TIMEOUT = 1.0


@pytest.fixture
def server(gateway_factory: Callable[..., GatewayServer], upstream: FakeUpstream) -> GatewayServer:
    """A gateway on a socket over the upstream "up", with a 1 s body deadline."""
    return gateway_factory(one_provider_config(upstream, body_timeout=BODY_TIMEOUT))


def base(server: GatewayServer) -> str:
    """The base URL an agent on the Messages API is given: no /v1 (its SDK appends /v1/messages)."""
    return server.url.removesuffix("/v1")


def test_the_sdk_over_http(server: GatewayServer) -> None:
    with anthropic.Anthropic(base_url=base(server), api_key=ADMIN_KEY, max_retries=0) as client:
        with client.messages.stream(model="default", max_tokens=10, messages=HI) as stream:
            message = stream.get_final_message()
        assert message.content[0].type == "text" and message.content[0].text == "Hello from up"
        assert client.messages.create(model="default", max_tokens=10, messages=HI).stop_reason == "end_turn"
    assert httpx.head(base(server) + "/", timeout=5).status_code == 200


def test_a_client_leaving_mid_stream_cancels_the_upstream_call(server: GatewayServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=200, interval=0.05))
    body = {"model": "default", "max_tokens": 1000, "messages": HI, "stream": True}
    headers = {"x-api-key": ADMIN_KEY}
    with httpx.stream("POST", f"{server.url}/messages", json=body, headers=headers, timeout=5) as r:
        for line in r.iter_lines():
            if "text_delta" in line:
                break
    assert upstream.wait_for_disconnect(2.0)
    [row] = server.wait_rows(1)
    assert (row["endpoint"], row["status"]) == ("messages", 499)


def test_a_client_leaving_before_a_json_answer_cancels_the_upstream_call(
    server: GatewayServer, upstream: FakeUpstream
) -> None:
    upstream.script(Delay(1.5))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/messages",
            json={"model": "default", "max_tokens": 10, "messages": HI},
            headers={"x-api-key": ADMIN_KEY},
            timeout=0.3,
        )
    assert upstream.wait_for_disconnect(1.0)
    [row] = server.wait_rows(1)
    assert row["status"] == 499


def test_a_slow_body_gets_408_in_anthropic_s_shape(server: GatewayServer, upstream: FakeUpstream) -> None:
    body = json.dumps({"model": "default", "max_tokens": 10, "messages": HI}).encode()
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {ADMIN_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=BODY_TIMEOUT + 3) as sock:
        sock.sendall(head + body[:10])  # and the rest never comes
        deadline = time.monotonic() + BODY_TIMEOUT + 3
        while time.monotonic() < deadline and (got := sock.recv(65536)):
            answer += got
    status, _, payload = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408"), answer[:200]
    error = json.loads(payload)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "did not arrive" in error["error"]["message"]
    assert upstream.requests == []

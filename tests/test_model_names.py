"""Hostile model names: control characters, over-long names, non-ASCII ones.

A name that is not 1-256 printable characters is a 400 in OpenAI's shape (``param: model``, code
``invalid_model``) before any upstream is called, on every endpoint that takes one; nothing is stored and nothing
stays in flight. A printable non-ASCII name is served, and the headers naming it are percent-encoded, as bytes
on the wire.

In process, but for the WebSocket and the bytes of response heads, read from a real socket.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.inprocess import InProcessGateway

HEADERS = {"authorization": f"Bearer {ADMIN_KEY}"}
HELLO = [{"role": "user", "content": "hi"}]
# backup lists no models, so "backup/<anything>" is routed there with the client's name as the model.
BAD = [
    "backup/a\r\nx-evil: 1",
    "backup/a\nb",
    "backup/a\x00b",
    "backup/a\tb",
    "backup/a\x7fb",
    "backup/a\u202eb",  # right-to-left override
    "backup/a\u2028b",  # line separator
]
NON_ASCII = "backup/modèle-日本 %41"


def _bodies(model: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/chat/completions", {"model": model, "messages": HELLO}),
        ("/chat/completions", {"model": model, "messages": HELLO, "stream": True}),
        ("/completions", {"model": model, "prompt": "hi"}),
        ("/completions", {"model": model, "prompt": "hi", "stream": True}),
        ("/embeddings", {"model": model, "input": "hi"}),
    ]


def _in_flight(gateway: GatewayServer | InProcessGateway) -> float:
    get = gateway.http.get if isinstance(gateway, InProcessGateway) else httpx.get
    text = get(gateway.url.removesuffix("/v1") + "/metrics", timeout=5).text
    found = re.search(r"^minigate_in_flight_requests (\S+)$", text, re.M)
    assert found is not None
    return float(found.group(1))


def _assert_invalid_model(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"], error["type"]) == ("model", "invalid_model", "invalid_request_error")


@pytest.mark.parametrize("model", BAD, ids=repr)
def test_a_bad_name_is_a_400_before_any_upstream(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, backup: FakeUpstream, model: str
) -> None:
    gateway = inprocess_gateway
    for path, body in _bodies(model):
        # json.dumps escapes every character, so the body is valid JSON whatever the name holds.
        r = gateway.http.post(f"{gateway.url}{path}", content=json.dumps(body), headers=HEADERS, timeout=10)
        _assert_invalid_model(r)
    assert not primary.requests and not backup.requests
    assert not gateway.rows() and _in_flight(gateway) == 0


def test_a_name_over_256_characters_is_a_400(inprocess_gateway: InProcessGateway, backup: FakeUpstream) -> None:
    gateway = inprocess_gateway
    for path, body in _bodies("backup/" + "x" * 250):
        r = gateway.http.post(f"{gateway.url}{path}", json=body, headers=HEADERS, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == "model", r.text
    assert not backup.requests and not gateway.rows()


def test_model_ids_of_get_models_are_checked(inprocess_gateway: InProcessGateway) -> None:
    gateway = inprocess_gateway
    for bad in ("a%0D%0Ab", "a%00b", "x" * 300, "%E2%80%AE"):
        r = gateway.http.get(f"{gateway.url}/models/{bad}", headers=HEADERS, timeout=10)
        _assert_invalid_model(r)
    assert gateway.http.get(f"{gateway.url}/models/nothing-here", headers=HEADERS, timeout=10).status_code == 404


def test_a_bad_name_over_a_websocket(gateway: GatewayServer, backup: FakeUpstream) -> None:
    async def exchange() -> dict[str, Any]:
        url = gateway.url.replace("http://", "ws://") + "/ws"
        async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=HEADERS) as ws:
            request = {"model": "backup/a\r\nb", "messages": HELLO}
            await ws.send_json({"type": "chat", "id": "1", "request": request})
            frame: dict[str, Any] = await asyncio.wait_for(ws.receive_json(), 10)
            return frame

    frame = asyncio.run(exchange())
    assert (frame["type"], frame["status"], frame["error"]["code"]) == ("error", 400, "invalid_model")
    assert not backup.requests and not gateway.rows()


def _raw_head(gateway: GatewayServer, body: dict[str, Any]) -> bytes:
    """The response head for ``body`` as bytes, read from the socket (with the whole answer)."""
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {ADMIN_KEY}\r\ncontent-length: {len(data)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head + data)
        answer = b""
        while len(answer) < 1 << 20:  # "connection: close": the answer ends with the connection
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    return answer.partition(b"\r\n\r\n")[0]


@pytest.mark.parametrize("stream", [False, True])
def test_a_non_ascii_name_is_served_with_percent_encoded_headers(gateway: GatewayServer, stream: bool) -> None:
    head = _raw_head(gateway, {"model": NON_ASCII, "messages": HELLO, "stream": stream})
    assert head.startswith(b"HTTP/1.1 200"), head
    head.decode("ascii")  # every byte of the head is ASCII
    [line] = [line for line in head.split(b"\r\n") if line.lower().startswith(b"x-minigate-model:")]
    value = line.partition(b":")[2].strip().decode()
    assert value == quote("modèle-日本 %41", safe=" ") and unquote(value) == "modèle-日本 %41"
    [row] = gateway.rows()
    assert (row["status"], row["provider"], row["model"]) == (200, "backup", "modèle-日本 %41")
    assert _in_flight(gateway) == 0


def test_check_model_name() -> None:
    from minigate.gateway.core.errors import InvalidRequest
    from minigate.gateway.routing.routes import check_model_name

    assert check_model_name("provider/model-1.5:latest") == "provider/model-1.5:latest"
    assert check_model_name("modèle 日本") == "modèle 日本"
    for bad in ["", "x" * 257, "\ud800", *(name.removeprefix("backup/") for name in BAD)]:
        with pytest.raises(InvalidRequest) as caught:
            check_model_name(bad)
        assert (caught.value.param, caught.value.code) == ("model", "invalid_model")

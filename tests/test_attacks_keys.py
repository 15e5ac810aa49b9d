"""Attacks on the key check (issue 7), against the gateway in process: hostile keys in the WebSocket's ``auth``
frame, and spoofed Host and proxy headers. See ``tests/test_attacks.py`` for the whole list.

The helpers here (hostile keys around a real one, a clean refusal) serve ``tests/test_attacks_keys_socket.py``
too: the ``Authorization`` header as raw bytes, login attempts from several client addresses and uvicorn's
handling of forwarded headers need a real socket.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.helpers import PASSWORD, WebClient

# What a reply must never show: database engines, SQL, the key table, a Python traceback.
DATABASE_WORDS = ("sqlite", "select ", "sqlalchemy", "psycopg", "asyncpg", "postgres", "traceback", "api_keys",
                  "key_hash", "operationalerror", "programmingerror", "syntax error", 'file "')  # fmt: skip
SPOOFED = {
    "host": "localhost",
    "x-forwarded-for": "127.0.0.1",
    "x-real-ip": "127.0.0.1",
    "forwarded": "for=127.0.0.1;host=localhost;proto=https",
    "x-forwarded-host": "localhost",
    "x-forwarded-proto": "https",
}
_CYRILLIC = str.maketrans(
    "aeopcxyABEKMHOPCTX",
    "\u0430\u0435\u043e\u0440\u0441\u0445\u0443\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425",
)


def fullwidth(text: str) -> str:
    """``text`` in fullwidth forms (NFKC turns it back into ``text``)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def cyrillic(text: str) -> str:
    """``text`` with its first Latin letter that has a Cyrillic twin swapped for that twin."""
    for i, c in enumerate(text):
        if c.translate(_CYRILLIC) != c:
            return text[:i] + c.translate(_CYRILLIC) + text[i + 1 :]
    raise AssertionError(f"no letter of {text!r} has a Cyrillic twin")


def hostile_keys(real: str) -> dict[str, str]:
    """Keys that must all be refused, built around the real key ``real``."""
    return {
        "sql injection": "' OR 1=1--",
        "sql injection, quoted": "x' OR '1'='1' --",
        "sql injection, key prefix": "mg-' UNION SELECT key_hash FROM api_keys--",
        "10 KB": "mg-" + "A" * 10_240,
        "NUL after the key": real + "\x00",
        "NUL inside the key": real[:5] + "\x00" + real[5:],
        "only NUL": "\x00",
        "Cyrillic letter": cyrillic(real),
        "fullwidth": fullwidth(real),
        "zero-width space after": real + "\u200b",
        "zero-width space before": "\u200b" + real,
        "no-break space after": real + "\u00a0",
        "next-line after": real + "\u0085",
        "ideographic space after": real + "\u3000",
        "byte order mark before": "\ufeff" + real,
        "percent-encoded": real.replace("-", "%2D"),
    }


def assert_clean_refusal(status: int, body: bytes, label: str, *, allow_parser_400: bool = False) -> None:
    """401 in OpenAI's error shape with no database text; or, for bytes HTTP forbids in a header (NUL and other
    control characters), a 400 (also in OpenAI's shape) from the HTTP parser, before the request reaches the app."""
    text = body.decode("utf-8", "replace")
    assert not [word for word in DATABASE_WORDS if word in text.lower()], (label, text)
    if allow_parser_400 and status == 400:
        error = json.loads(body)["error"]
        assert error["code"] == "invalid_http_request" and error["type"] == "invalid_request_error", (label, error)
        return
    assert status == 401, (label, status, text)
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key", (label, error)


# A gateway whose default agent is the fake echo model: nothing upstream to stand in the way of the auth tests.
ECHO: dict[str, Any] = {
    "agents": {"defaults": {"model": {"primary": "echo/echo"}}},
    "models": {"providers": {"echo": {"type": "fake", "models": ["echo"]}}},
}


def make_keys(server: Any) -> dict[str, str]:
    """A user key and an admin key, made in ``server``'s web UI: ``{"user": token, "admin": token}``."""
    web = WebClient(server)
    assert web.login(ADMIN_KEY).status_code == 303
    keys = {}
    for name, admin in (("user", False), ("admin", True)):
        page = web.post("/keys", {"name": name, **({"admin": "on"} if admin else {})}).text
        keys[name] = page.split('id="new-key" class="secret" readonly value="')[1].split('"')[0]
    web.close()
    return keys


@pytest.fixture
def keyed(
    inprocess_factory: Callable[..., InProcessGateway], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[InProcessGateway, dict[str, str]]]:
    """A gateway over the echo model with the admin password set, and a user key and an admin key in its table."""
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    server = inprocess_factory(ECHO)
    yield server, make_keys(server)


CHAT = json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_hostile_keys_in_the_websocket_auth_frame_are_refused(keyed: Any) -> None:
    server, keys = keyed
    client = server.http
    assert isinstance(client, TestClient)  # the in-process client: Litestar's, with its WebSocket sessions
    for label, key in hostile_keys(keys["user"]).items():
        with client.websocket_connect("/v1/ws") as ws:
            ws.send_json({"type": "auth", "api_key": key})
            frame = ws.receive(timeout=5)["text"]
            assert not [w for w in DATABASE_WORDS if w in str(frame).lower()], label
            assert json.loads(frame)["error"]["code"] == "invalid_api_key", label
            with pytest.raises(WebSocketDisconnect) as closing:
                ws.receive(timeout=5)
            assert closing.value.code == 1008, label
    with client.websocket_connect("/v1/ws") as ws:  # the control
        ws.send_json({"type": "auth", "api_key": keys["user"]})
        ws.send_json({"type": "chat", "id": "a", "request": json.loads(CHAT)})
        frames = [ws.receive_json(timeout=5) for _ in range(4)]
        assert [f["type"] for f in frames] == ["delta", "delta", "delta", "done"], frames


def test_spoofed_host_and_forwarding_headers_change_no_auth_decision(keyed: Any) -> None:
    server, keys = keyed
    for spoof in [SPOOFED, {"host": "127.0.0.1"}, {"x-forwarded-for": "127.0.0.1, 10.0.0.1"}]:
        with server.new_http(headers=spoof, follow_redirects=False) as http:
            for auth in ({}, {"authorization": "Bearer wrong"}):
                assert http.post("/v1/chat/completions", content=CHAT, headers=auth).status_code == 401
                assert http.get("/v1/models", headers=auth).status_code == 401
                assert http.get("/admin/api/models", headers=auth).status_code == 401
                assert http.post("/admin/reload", headers=auth).status_code == 401
            user = {"authorization": f"Bearer {keys['user']}"}
            assert http.get("/admin/api/models", headers=user).status_code == 403
            assert http.post("/admin/reload", headers=user).status_code == 403
            for path in ("/keys", "/usage", "/usage.csv", "/models", "/chat"):
                assert http.get(path).status_code == 303
                assert http.get(path, headers={"hx-request": "true"}).status_code == 403
            assert http.post("/keys", data={"name": "spoofed"}).status_code == 403
    assert server.rows() == []

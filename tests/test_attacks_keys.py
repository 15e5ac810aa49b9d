"""Attacks on the key check (issue 7): injected, huge, NUL-carrying and look-alike keys, and spoofed proxy headers.

Every way a key comes in is tried against a real gateway holding real keys: the ``Authorization`` header (sent
as raw bytes over a socket, so non-ASCII reaches the server exactly as a hostile client would send it), the
WebSocket's ``auth`` frame, and the web login form. See ``tests/test_attacks.py`` for the whole list.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.gateway_server import ADMIN_KEY, GatewayServer
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


def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send one HTTP/1.1 request byte for byte; ``(status, body)`` of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        answer = b""
        for _ in range(1000):  # bounded: the server closes the connection after one answer
            data = conn.recv(65536)
            if not data:
                break
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def header_encodings(key: str) -> list[bytes]:
    """The bytes a client might put on the wire for ``key``: UTF-8, and Latin-1 when it fits (the one the server
    decodes back to exactly ``key``)."""
    encodings = [key.encode("utf-8")]
    with contextlib.suppress(UnicodeEncodeError):
        encodings.append(key.encode("latin-1"))
    return list(dict.fromkeys(encodings))


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


@pytest.fixture
def keyed(gateway_factory: Callable[..., GatewayServer], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A gateway over the echo model with the admin password set, and a user key and an admin key in its table."""
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    server = gateway_factory(ECHO)
    web = WebClient(server)
    assert web.login(ADMIN_KEY).status_code == 303
    keys = {}
    for name, admin in (("user", False), ("admin", True)):
        page = web.post("/keys", {"name": name, **({"admin": "on"} if admin else {})}).text
        keys[name] = page.split('id="new-key" class="secret" readonly value="')[1].split('"')[0]
    web.close()
    yield server, keys


CHAT = json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_hostile_keys_in_the_authorization_header_get_a_clean_401(keyed: Any) -> None:
    server, keys = keyed
    for real in (keys["user"], keys["admin"], ADMIN_KEY):
        for label, key in hostile_keys(real).items():
            for encoded in header_encodings(key):
                for path, body in ((b"POST /v1/chat/completions", CHAT), (b"GET /v1/models", b"")):
                    head = path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    status, reply = raw_request(server.port, head + b"Authorization: Bearer " + encoded + b"\r\n", body)
                    assert_clean_refusal(status, reply, label, allow_parser_400="\x00" in key)
                status, reply = raw_request(
                    server.port,
                    b"GET /admin/api/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + encoded + b"\r\n",
                )
                assert_clean_refusal(status, reply, label, allow_parser_400="\x00" in key)
    assert server.rows() == []  # no refused request got as far as routing
    for real in (keys["user"], keys["admin"], ADMIN_KEY):  # the control: the real keys pass
        answer = httpx.post(f"{server.url}/chat/completions", content=CHAT, headers={"authorization": f"Bearer {real}"})
        assert answer.status_code == 200


async def test_hostile_keys_in_the_websocket_auth_frame_are_refused(keyed: Any) -> None:
    server, keys = keyed
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        for label, key in hostile_keys(keys["user"]).items():
            async with http.ws_connect(f"ws://127.0.0.1:{server.port}/v1/ws") as ws:
                await ws.send_json({"type": "auth", "api_key": key})
                frame = await ws.receive(timeout=5)
                assert not [w for w in DATABASE_WORDS if w in str(frame.data).lower()], label
                assert json.loads(frame.data)["error"]["code"] == "invalid_api_key", label
                closing = await ws.receive(timeout=5)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008, label
        async with http.ws_connect(f"ws://127.0.0.1:{server.port}/v1/ws") as ws:  # the control
            await ws.send_json({"type": "auth", "api_key": keys["user"]})
            await ws.send_json({"type": "chat", "id": "a", "request": json.loads(CHAT)})
            frames = [await ws.receive_json(timeout=5) for _ in range(4)]
            assert [f["type"] for f in frames] == ["delta", "delta", "delta", "done"], frames


def web_from(server: GatewayServer, source: str) -> WebClient:
    """A web client whose connections come from ``source`` (any 127.x address reaches 127.0.0.1)."""
    web = WebClient(server)
    web.http.close()
    web.http = web.raw(transport=httpx.HTTPTransport(local_address=source))
    return web


def login_attempt(web: WebClient, secret: str, token: str | None = None, **headers: str) -> httpx.Response:
    """Post the login form with a fresh login token (or ``token``)."""
    web.http.cookies.clear()
    web.get("/login")
    fresh = web.http.cookies.get("mg_login", path="/login") or ""
    # Form encoding percent-encodes every byte (NUL is %00), as a browser would.
    return web.http.post("/login", data={"_login": token or fresh, "secret": secret}, headers=headers)


def test_hostile_secrets_in_the_login_form_get_the_login_page_again(keyed: Any) -> None:
    server, keys = keyed
    hostile = [*hostile_keys(keys["admin"]).items(), *hostile_keys(ADMIN_KEY).items(), *hostile_keys(PASSWORD).items()]
    for i, (label, secret) in enumerate(hostile):
        web = web_from(server, f"127.0.0.{2 + i // 9}")  # fewer than 10 tries per address: the throttle stays out
        try:
            answer = login_attempt(web, secret)
            assert answer.status_code == 401 and "Wrong password or key" in answer.text, (label, answer.status_code)
            assert "mg_session" not in answer.headers.get("set-cookie", ""), label
            assert not [w for w in DATABASE_WORDS if w in answer.text.lower()], label
            assert web.get("/keys").status_code == 303, label
        finally:
            web.close()
    web = web_from(server, "127.0.1.1")
    try:
        for token in ("\u0430" * 32, "x\x00y"):  # a non-ASCII or NUL login token is a stale form, not a 500
            answer = login_attempt(web, PASSWORD, token=token)
            assert answer.status_code == 401 and "The form expired" in answer.text
        assert login_attempt(web, PASSWORD).status_code == 303  # the control
    finally:
        web.close()


def test_spoofed_host_and_forwarding_headers_change_no_auth_decision(keyed: Any) -> None:
    server, keys = keyed
    base = f"http://127.0.0.1:{server.port}"
    for spoof in [SPOOFED, {"host": "127.0.0.1"}, {"x-forwarded-for": "127.0.0.1, 10.0.0.1"}]:
        with httpx.Client(base_url=base, headers=spoof, timeout=10, follow_redirects=False) as http:
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


def test_rotating_x_forwarded_for_buys_no_extra_login_attempts(keyed: Any) -> None:
    server, _ = keyed
    web = WebClient(server)  # from 127.0.0.1, whose X-Forwarded-For uvicorn believes
    try:
        for i in range(10):
            answer = login_attempt(web, "guess", **{"x-forwarded-for": f"10.1.0.{i}"})
            assert answer.status_code == 401 and "Too many failed attempts" not in answer.text
        for spoof in ("10.1.1.1", "127.0.0.1", "::1"):
            answer = login_attempt(web, PASSWORD, **{"x-forwarded-for": spoof})
            assert answer.status_code == 401 and "Too many failed attempts" in answer.text
    finally:
        web.close()
    other = web_from(server, "127.0.2.1")  # the control: a real address of its own is not locked out
    try:
        assert login_attempt(other, PASSWORD).status_code == 303
    finally:
        other.close()


@pytest.mark.parametrize("trusted", [False, True])
def test_forwarded_addresses_are_believed_only_from_trusted_proxies(
    gateway_factory: Callable[..., GatewayServer], monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    config = {**ECHO, "server": {"trusted_proxies": ["127.0.0.1"] if trusted else []}}
    server = gateway_factory(config)
    web = WebClient(server)
    try:
        for _ in range(10):  # 127.0.0.1 uses up its guesses
            assert "Too many failed attempts" not in login_attempt(web, "guess").text
        answer = login_attempt(web, PASSWORD, **{"x-forwarded-for": "10.9.9.9"})
    finally:
        web.close()
    if trusted:  # the proxy at 127.0.0.1 says the attempt comes from 10.9.9.9, which has guesses left
        assert answer.status_code == 303
    else:  # no proxy is trusted: the header names nothing, the attempt is 127.0.0.1's and it is locked out
        assert answer.status_code == 401 and "Too many failed attempts" in answer.text

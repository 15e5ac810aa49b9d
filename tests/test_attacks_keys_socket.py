"""Attacks on the key check (issue 7) that need a real socket: hostile keys in the ``Authorization`` header sent
as raw bytes (in process, the test client decodes header values and encodes them again as UTF-8, so a Latin-1
key would never reach the app as a hostile client sends it; and uvicorn's parser refuses NUL before the app),
hostile secrets in the login form from several client addresses (the login throttle counts per address, and only
a socket has one), and forwarded addresses, which uvicorn believes or not. The helpers and the in-process attacks
are in ``tests/test_attacks_keys.py``; see ``tests/test_attacks.py`` for the whole list.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.test_attacks_keys import CHAT, DATABASE_WORDS, ECHO, assert_clean_refusal, hostile_keys, make_keys
from tests.web.helpers import PASSWORD, WebClient


@pytest.fixture
def keyed(
    gateway_factory: Callable[..., GatewayServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[GatewayServer, dict[str, str]]]:
    """A real gateway over the echo model with the admin password set, and a user key and an admin key."""
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    server = gateway_factory(ECHO)
    yield server, make_keys(server)


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
            shown = re.sub(r"<[^>]*>", " ", answer.text).lower()  # what the page says, not its tags (<select>)
            assert not [w for w in DATABASE_WORDS if w in shown], label
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

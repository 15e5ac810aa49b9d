"""Login, sessions, CSRF and origin checks: admin pages and their POST endpoints refuse everyone else."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.helpers import PASSWORD, WebClient, web_config

ADMIN_PAGES = ["/models", "/usage", "/usage.csv", "/keys"]
ADMIN_POSTS = [
    ("/models/action", {"provider": "echo", "model": "echo", "action": "load"}),
    ("/models/import", {"provider": "echo", "source": "x"}),
    ("/models/chain", {"agent": "defaults", "chain": "echo/other"}),
    ("/keys", {"name": "sneaky"}),
    ("/keys/1/revoke", {}),
]
CHAT_POSTS = [
    ("/chat/new", {"model": "default"}),
    ("/chat/1/send", {"content": "hi"}),
    ("/chat/1/regenerate", {}),
    ("/chat/1/settings", {"model": "default"}),
    ("/chat/1/rename", {"title": "x"}),
    ("/chat/1/delete", {}),
]


@pytest.mark.parametrize("path", [*ADMIN_PAGES, "/chat", "/chat/1"])
def test_pages_without_session_go_to_login(shared_anonymous: WebClient, path: str) -> None:
    response = shared_anonymous.get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize(("path", "data"), ADMIN_POSTS + CHAT_POSTS)
def test_posts_without_session_are_refused(shared_anonymous: WebClient, path: str, data: dict[str, str]) -> None:
    response = shared_anonymous.post(path, data)
    assert response.status_code == 403


@pytest.mark.parametrize(("path", "data"), ADMIN_POSTS + CHAT_POSTS)
def test_posts_without_or_with_a_wrong_csrf_token_are_refused(
    shared_admin: WebClient, path: str, data: dict[str, str]
) -> None:
    client = shared_admin
    assert client.post(path, data, csrf=False).status_code == 403
    assert client.post(path, {**data, "_csrf": "not-the-token"}, csrf=False).status_code == 403
    assert client.post(path, data, csrf=False, headers={"x-csrf-token": "wrong"}).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [{"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": "null"}],
)
def test_cross_site_posts_are_refused_even_with_the_token(client: WebClient, headers: dict[str, str]) -> None:
    assert client.post("/keys", {"name": "from-elsewhere"}, headers=headers).status_code == 403
    assert "from-elsewhere" not in client.get("/keys").text


def test_the_token_in_a_header_is_accepted(client: WebClient) -> None:
    token = client.csrf
    assert token is not None
    response = client.post("/keys", {"name": "via-header"}, csrf=False, headers={"x-csrf-token": token})
    assert response.status_code == 200
    assert "via-header" in response.text


def test_session_cookie_flags(web_app: InProcessGateway) -> None:
    web = WebClient(web_app)
    form = web.get("/login")
    token = form.text.split('name="_login" value="')[1].split('"')[0]
    response = web.http.post("/login", data={"_login": token, "secret": PASSWORD, "next": "/usage"})
    assert response.status_code == 303 and response.headers["location"] == "/usage"
    cookie = response.headers["set-cookie"].lower()
    assert "mg_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    web.close()


def test_wrong_password_and_user_keys_cannot_log_in(web_app: InProcessGateway, anonymous: WebClient) -> None:
    assert anonymous.login("wrong").status_code == 401
    user_key = _create_key(web_app, admin=False)
    assert anonymous.login(user_key).status_code == 401
    assert anonymous.get("/keys").status_code == 303


def test_admin_keys_and_the_bootstrap_key_log_in(web_app: InProcessGateway) -> None:
    for secret in (ADMIN_KEY, _create_key(web_app, admin=True)):
        web = WebClient(web_app)
        assert web.login(secret).status_code == 303
        assert web.get("/keys").status_code == 200
        web.close()


def test_login_form_needs_its_own_token(anonymous: WebClient) -> None:
    response = anonymous.http.post("/login", data={"secret": PASSWORD, "_login": "forged"})
    assert response.status_code == 401
    assert "mg_session" not in response.headers.get("set-cookie", "")


def test_logins_are_throttled(anonymous: WebClient) -> None:
    for _ in range(10):
        assert anonymous.login("wrong").status_code == 401
    response = anonymous.login(PASSWORD)
    assert response.status_code == 401 and "Too many failed attempts" in response.text


def test_logout_ends_the_session_for_good(client: WebClient) -> None:
    cookie = client.http.cookies.get("mg_session")
    assert client.post("/logout").status_code == 303
    stolen = client.raw(cookies={"mg_session": cookie or ""}, follow_redirects=False)
    assert stolen.get("/keys").status_code == 303
    stolen.close()


def test_login_redirect_stays_on_this_site(anonymous: WebClient) -> None:
    form = anonymous.get("/login")
    token = form.text.split('name="_login" value="')[1].split('"')[0]
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = anonymous.http.post("/login", data={"_login": token, "secret": PASSWORD, "next": target})
        assert response.headers["location"] == "/chat"


def test_pages_send_security_headers(client: WebClient) -> None:
    for path in ["/chat", "/models", "/usage", "/keys", "/login"]:
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "img-src 'self' data:" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"


def test_public_chat_lets_guests_chat_but_not_administer(
    inprocess_factory: Callable[..., InProcessGateway], remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("MINIGATE_CHAT_PUBLIC", "1")
    server = inprocess_factory(web_config(remote))
    guest = WebClient(server)
    assert guest.get("/chat").status_code == 200
    guest.refresh_csrf()
    conversation = guest.new_chat()
    assert "You said: hello guest" in guest.send(conversation, "hello guest")
    for path in ADMIN_PAGES:
        assert guest.get(path).status_code == 303
    assert guest.post("/keys", {"name": "guest-key"}).status_code == 403
    admin = WebClient(server)
    admin.login()
    assert "hello guest" not in admin.get("/chat").text  # guests' conversations are their own
    assert admin.get(f"/chat/{conversation}").status_code == 404
    guest.close()
    admin.close()


def _create_key(server: InProcessGateway, *, admin: bool) -> str:
    web = WebClient(server)
    web.login()
    response = web.post("/keys", {"name": "k", **({"admin": "on"} if admin else {})})
    web.close()
    return response.text.split('id="new-key" class="secret" readonly value="')[1].split('"')[0]

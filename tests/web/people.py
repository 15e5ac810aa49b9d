"""People in the web tests: an admin adds them on /users, they log in with their name, make keys on /keys."""

from __future__ import annotations

import re
from typing import Any

from tests.web.helpers import WebClient

_LOGIN = re.compile(r'name="_login" value="([^"]+)"')
_SECRET = re.compile(r'id="new-key" class="secret" readonly value="([^"]+)"')
_KEY_ROW = re.compile(r'<tr id="key-(\d+)">')


def add_person(admin: WebClient, name: str, password: str, *, is_admin: bool = False) -> int:
    """Add ``name`` on /users as ``admin``; returns the person's id."""
    response = admin.post("/users", {"name": name, "password": password, **({"admin": "on"} if is_admin else {})})
    assert response.status_code == 200, response.text
    found = re.search(
        rf'<tr id="user-(\d+)">\s*<td data-label="ID">\d+</td><th scope="row" data-label="Name">'
        rf"{re.escape(name)}</th>",
        response.text,
    )
    assert found is not None, response.text
    return int(found.group(1))


def login_form(web: WebClient, name: str, password: str) -> Any:
    """Post the login form with a name, as a browser would; the response."""
    token = _LOGIN.search(web.get("/login").text)
    assert token is not None
    fields = {"_login": token.group(1), "name": name, "secret": password, "next": "/chat"}
    return web.http.post("/login", data=fields)


def person(server: Any, name: str, password: str) -> WebClient:
    """A client of ``server`` logged in as the person ``name``."""
    web = WebClient(server)
    response = login_form(web, name, password)
    assert response.status_code == 303, response.text
    web.refresh_csrf()
    return web


def new_key(web: WebClient, name: str, **fields: str) -> tuple[int, str]:
    """Create a key on /keys; ``(its id, the key)``."""
    response = web.post("/keys", {"name": name, **fields})
    assert response.status_code == 200, response.text
    secret = _SECRET.search(response.text)
    assert secret is not None
    ids = [int(i) for i in _KEY_ROW.findall(response.text)]
    return max(ids), secret.group(1)


def key_ids(web: WebClient) -> list[int]:
    """The ids of the keys /keys lists to ``web``."""
    return [int(i) for i in _KEY_ROW.findall(web.get("/keys").text)]


__all__ = ["add_person", "key_ids", "login_form", "new_key", "person"]

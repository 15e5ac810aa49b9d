"""Web sessions: one opened with an API key ends when the key is revoked, whatever the cookie's lifetime."""

from __future__ import annotations

import re

from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient


def test_a_session_opened_with_a_key_ends_when_the_key_is_revoked(client: WebClient, web_app: InProcessGateway) -> None:
    page = client.post("/keys", {"name": "ops laptop", "admin": "on"}).text
    secret = re.findall(r"mg-[A-Za-z0-9_-]{16,}", page)[0]
    key_id = re.findall(r"/keys/(\d+)/revoke", page)[-1]
    keyed = WebClient(web_app)
    try:
        assert keyed.login(secret).status_code == 303
        conversation = keyed.new_chat()
        assert "msg-assistant" in keyed.send(conversation, "hi")
        assert keyed.get("/keys").status_code == 200
        assert client.post(f"/keys/{key_id}/revoke").status_code == 200
        assert keyed.get("/keys").status_code == 303  # to the login page: no session any more
        assert keyed.post(f"/chat/{conversation}/send", {"content": "still there?"}, htmx=True).status_code == 403
        assert keyed.post("/chat/new", {"model": "default"}).status_code == 403
    finally:
        keyed.close()
    assert client.get("/keys").status_code == 200  # a password session has no key to lose

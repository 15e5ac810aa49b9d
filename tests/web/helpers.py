"""A logged-in HTTP client for the web UI and the config the web tests run against."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

PASSWORD = "web-admin-password-42"
# Set in the config as a provider's API key: no page may ever show it.
CONFIG_SECRET = "sk-config-secret-do-not-leak-7f3a9c"


def web_config(remote: FakeUpstream) -> dict[str, Any]:
    """Agents over the in-process fake provider (fast, slow) and a remote upstream that falls back to it."""
    return {
        "agents": {
            "defaults": {"model": {"primary": "echo/echo"}},
            "slow": {"model": {"primary": "slow/echo"}},
            "remote": {"model": {"primary": "remote/gpt-4o-mini", "fallbacks": ["echo/echo"]}},
        },
        "models": {
            "providers": {
                "echo": {"type": "fake", "models": ["echo", "other"]},
                "slow": {"type": "fake", "models": ["echo"], "delay": 0.2},
                "remote": {
                    "endpoint": remote.url,
                    "models": ["gpt-4o-mini"],
                    "auth": {"type": "api_key", "value": CONFIG_SECRET},
                    "headers": {"x-extra-secret": CONFIG_SECRET},
                    "timeout": 2,
                },
            }
        },
        "router": {"timeout": 10, "cooldown": {"failures": 100, "initial": 0.1}},
    }


_CSRF = re.compile(r'name="_csrf" value="([^"]+)"')
_LOGIN = re.compile(r'name="_login" value="([^"]+)"')


class WebClient:
    """An httpx client that logs in like a browser and sends the CSRF token back."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.http = self.raw()
        self.csrf: str | None = None

    def raw(self, **kwargs: Any) -> httpx.Client:
        """A new client of the same gateway (in process or on its socket), without this one's session."""
        kwargs.setdefault("follow_redirects", False)
        if isinstance(self.server, InProcessGateway):
            return self.server.new_http(**kwargs)
        port = self.server.port  # a GatewayServer, or a `minigate serve` process
        return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, **kwargs)

    def close(self) -> None:
        self.http.close()

    def login(self, secret: str = PASSWORD) -> httpx.Response:
        form = self.http.get("/login")
        token = _LOGIN.search(form.text)
        assert token is not None
        response = self.http.post("/login", data={"_login": token.group(1), "secret": secret, "next": "/chat"})
        if response.status_code == 303:
            self.refresh_csrf()
        return response

    def refresh_csrf(self) -> None:
        page = self.http.get("/chat")
        match = _CSRF.search(page.text)
        self.csrf = match.group(1) if match else None

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, *, htmx: bool = False, csrf: bool = True,
             headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
        fields = dict(data or {})
        if csrf and self.csrf:
            fields["_csrf"] = self.csrf
        sent = {"hx-request": "true"} if htmx else {}
        return self.http.post(path, data=fields, headers={**sent, **(headers or {})})

    def new_chat(self, model: str = "default", **settings: Any) -> int:
        response = self.post("/chat/new", {"model": model, **settings})
        assert response.status_code == 303, response.text
        return int(response.headers["location"].rsplit("/", 1)[1])

    def send(self, conversation_id: int, content: str) -> str:
        """Send a message as htmx does and read the whole SSE answer."""
        response = self.post(f"/chat/{conversation_id}/send", {"content": content}, htmx=True)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        return response.text


def sse_data(body: str) -> list[str]:
    """The data of each event of an SSE body."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if lines:
            events.append("\n".join(lines))
    return events


__all__ = ["ADMIN_KEY", "CONFIG_SECRET", "PASSWORD", "WebClient", "sse_data", "web_config"]

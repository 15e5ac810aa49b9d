"""Fixtures of the web UI tests: a gateway with the admin password set, and a logged-in client."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import GatewayServer
from tests.web.helpers import CONFIG_SECRET, PASSWORD, WebClient, web_config


@pytest.fixture
def remote() -> Iterator[FakeUpstream]:
    """The upstream behind the ``remote`` provider (it expects the config's secret key)."""
    with FakeUpstream("remote", api_key=CONFIG_SECRET) as fake:
        yield fake


@pytest.fixture
def web_server(
    gateway_factory: Callable[..., GatewayServer], remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> GatewayServer:
    """A gateway whose admin password is :data:`PASSWORD`; chat needs login."""
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.delenv("MINIGATE_CHAT_PUBLIC", raising=False)
    return gateway_factory(web_config(remote))


@pytest.fixture
def client(web_server: GatewayServer) -> Iterator[WebClient]:
    """A client that is logged in as admin."""
    web = WebClient(web_server)
    assert web.login().status_code == 303
    yield web
    web.close()


@pytest.fixture
def anonymous(web_server: GatewayServer) -> Iterator[WebClient]:
    """A client with no session."""
    web = WebClient(web_server)
    yield web
    web.close()

"""Fixtures of the web UI tests: a gateway with the admin password set (in process, or a real server for the
browser and socket tests), and logged-in clients."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import GatewayServer
from tests.inprocess import InProcessGateway
from tests.web.browser import CHROMIUM, CHROMIUM_ARGS, base_url, login
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
def web_app(
    inprocess_factory: Callable[..., InProcessGateway], remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> InProcessGateway:
    """:func:`web_server` in process."""
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.delenv("MINIGATE_CHAT_PUBLIC", raising=False)
    return inprocess_factory(web_config(remote))


def _logged_in(server: GatewayServer | InProcessGateway) -> Iterator[WebClient]:
    web = WebClient(server)
    assert web.login().status_code == 303
    yield web
    web.close()


@pytest.fixture
def client(web_app: InProcessGateway) -> Iterator[WebClient]:
    """A client of :func:`web_app` that is logged in as admin."""
    yield from _logged_in(web_app)


@pytest.fixture
def server_client(web_server: GatewayServer) -> Iterator[WebClient]:
    """A client of the real :func:`web_server` that is logged in as admin."""
    yield from _logged_in(web_server)


@pytest.fixture(scope="module")
def shared_web_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    """:func:`web_app` once for a module, for tests that change nothing (refusals): much faster than one each."""
    with FakeUpstream("remote", api_key=CONFIG_SECRET) as remote, pytest.MonkeyPatch.context() as env:
        env.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
        env.delenv("MINIGATE_CHAT_PUBLIC", raising=False)
        with InProcessGateway(web_config(remote), tmp_path_factory.mktemp("web")) as app:
            yield app


@pytest.fixture(scope="module")
def shared_admin(shared_web_app: InProcessGateway) -> Iterator[WebClient]:
    """A client of :func:`shared_web_app` logged in as admin, shared by the module's tests."""
    yield from _logged_in(shared_web_app)


@pytest.fixture(scope="module")
def shared_anonymous(shared_web_app: InProcessGateway) -> Iterator[WebClient]:
    """A client of :func:`shared_web_app` with no session, shared by the module's tests."""
    web = WebClient(shared_web_app)
    yield web
    web.close()


@pytest.fixture
def anonymous(web_app: InProcessGateway) -> Iterator[WebClient]:
    """A client of :func:`web_app` with no session."""
    web = WebClient(web_app)
    yield web
    web.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless (the README's test command installs it)."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (the README's test command does)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, web_server: GatewayServer) -> Iterator[Page]:
    """A fresh browser context (own cookies) at 1280x800 on :func:`web_server`, logged in as admin."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base_url(web_server))
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    login(tab)
    yield tab
    context.close()

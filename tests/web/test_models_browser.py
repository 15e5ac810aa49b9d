"""The models page in a browser: an upstream nobody answers reads "unreachable", in the error colour."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import GatewayServer, free_port
from tests.web.browser import base_url, login
from tests.web.helpers import PASSWORD, web_config

Browser = pytest.importorskip("playwright.sync_api").Browser
SHOTS = Path("/tmp/shots-h15u")


def test_an_unreachable_upstream_reads_unreachable(
    browser: Browser,
    gateway_factory: Callable[..., GatewayServer],
    remote: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    config = web_config(remote)
    config["models"]["providers"]["down"] = {"endpoint": f"http://127.0.0.1:{free_port()}/v1", "models": ["gpt-4o"]}
    server = gateway_factory(config)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base_url(server))
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    login(tab)
    tab.goto("/models")
    down = tab.locator("section.provider", has_text="down").locator(".state")
    expect(down).to_have_text("unreachable")
    expect(down).to_have_class("state state-unreachable error")  # the error colour
    expect(tab.locator("section.provider", has_text="remote").locator(".state")).to_have_text("reachable")
    SHOTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(SHOTS / "models-1280.png"), full_page=True)
    tab.set_viewport_size({"width": 390, "height": 844})
    tab.locator("section.provider", has_text="down").scroll_into_view_if_needed()
    tab.screenshot(path=str(SHOTS / "models-390.png"))
    context.close()

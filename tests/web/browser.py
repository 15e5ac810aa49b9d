"""What the browser tests share: Debian's chromium and how to start it, the gateway's base URL, logging in,
screenshots and starting a chat (the ``browser`` and ``page`` fixtures are in ``tests/web/conftest.py``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.gateway_server import GatewayServer
from tests.web.helpers import PASSWORD

__all__ = ["ARTIFACTS", "CHROMIUM", "CHROMIUM_ARGS", "base_url", "login", "shoot", "start_chat"]

CHROMIUM = os.environ.get("MINIGATE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def base_url(server: GatewayServer) -> str:
    """Where ``server``'s pages are."""
    return f"http://127.0.0.1:{server.port}"


def login(tab: Page) -> None:
    """Log ``tab`` in as admin with the password."""
    tab.goto("/login")
    tab.get_by_label("Password or admin key").fill(PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    expect(tab).to_have_url(re.compile(r"/chat$"))


def shoot(tab: Page, name: str, *, full_page: bool = True) -> None:
    """Save ``name``-1280.png and ``name``-390.png (the tab's size, then a phone's) under ``$MINIGATE_SHOTS`` or
    test-artifacts/, and fail if the page scrolls sideways at 390 px."""
    folder = Path(os.environ.get("MINIGATE_SHOTS") or ARTIFACTS)
    folder.mkdir(parents=True, exist_ok=True)
    size = tab.viewport_size or {"width": 1280, "height": 800}
    tab.screenshot(path=str(folder / f"{name}-1280.png"), full_page=full_page)
    tab.set_viewport_size({"width": 390, "height": 844})
    tab.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # laid out and drawn
    tab.screenshot(path=str(folder / f"{name}-390.png"), full_page=full_page)
    overflow = tab.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    tab.set_viewport_size(size)
    assert overflow <= 0, f"{name} scrolls sideways at 390 px ({overflow} px too wide)"


def start_chat(tab: Page, model: str) -> None:
    """Open a new, empty conversation with ``model`` (as a form without JavaScript would: /chat itself starts the
    conversation with its first message; tests/web/test_browser_compose.py covers that)."""
    tab.goto("/chat")
    csrf = tab.locator("#composer input[name=_csrf]").get_attribute("value")
    response = tab.request.post("/chat/new", form={"model": model, "_csrf": csrf or ""}, max_redirects=0)
    assert response.status == 303, response.text()
    tab.goto(response.headers["location"])
    expect(tab).to_have_url(re.compile(r"/chat/\d+$"))

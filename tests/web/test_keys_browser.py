"""The keys page in a real browser: revoking asks first (with JavaScript and without), the new key has a copy
button, and no page asks for a file that is not there (the favicon)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.gateway_server import GatewayServer
from tests.web.browser import base_url, login
from tests.web.helpers import WebClient

playwright_sync = pytest.importorskip("playwright.sync_api")
Browser, Page = playwright_sync.Browser, playwright_sync.Page
SHOTS = Path("/tmp/shots-h15u")


def _tab(browser: Browser, server: GatewayServer, **options: object) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base_url(server), **options)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    return tab


@pytest.fixture
def keys_page(browser: Browser, web_server: GatewayServer) -> Iterator[Page]:
    """Logged in, with clipboard access granted (as a user clicking "Copy" on localhost has)."""
    tab = _tab(browser, web_server, permissions=["clipboard-read", "clipboard-write"])
    login(tab)
    yield tab
    tab.context.close()


def _create(tab: Page, name: str) -> str:
    tab.goto("/keys")
    tab.get_by_label("Name").fill(name)
    tab.get_by_role("button", name="Create key").click()
    secret = tab.get_by_label("The new key").input_value()
    assert secret.startswith("mg-")
    return secret


def _shoot(tab: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"{name}-1280.png"), full_page=True)
    tab.set_viewport_size({"width": 390, "height": 844})
    tab.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
    tab.set_viewport_size({"width": 1280, "height": 800})


def test_the_new_key_has_a_copy_button(keys_page: Page) -> None:
    missing: list[str] = []
    keys_page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    secret = _create(keys_page, "laptop")
    keys_page.get_by_role("button", name="Copy the key").click()
    expect(keys_page.locator("#copy-status")).to_have_text("Copied.")
    assert keys_page.evaluate("navigator.clipboard.readText()") == secret
    _shoot(keys_page, "keys-created")
    keys_page.wait_for_timeout(300)  # the favicon request is made after the load event
    assert missing == []


def test_copy_falls_back_to_selecting_the_key_without_the_clipboard_api(
    browser: Browser, web_server: GatewayServer
) -> None:
    tab = _tab(browser, web_server)
    tab.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")  # as on plain http
    login(tab)
    secret = _create(tab, "no clipboard")
    tab.get_by_role("button", name="Copy the key").click()
    selected = tab.evaluate("(() => { const i = document.getElementById('new-key');"
                            " return i.value.slice(i.selectionStart, i.selectionEnd); })()")  # fmt: skip
    assert selected == secret
    expect(tab.locator("#copy-status")).to_contain_text(re.compile("Copied|selected"))
    tab.context.close()


def test_revoking_asks_first(keys_page: Page, web_server: GatewayServer) -> None:
    secret = _create(keys_page, "phone")
    asked: list[str] = []

    def dismiss(dialog: object) -> None:
        asked.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()  # type: ignore[attr-defined]

    keys_page.once("dialog", dismiss)
    keys_page.get_by_role("button", name="Revoke key phone").click()
    keys_page.wait_for_timeout(300)
    assert asked and "phone" in asked[0]
    assert web_server.client(key=secret).models.list().data  # cancelled: the key still works
    expect(keys_page.locator("#key-1")).not_to_contain_text("revoked")
    keys_page.once("dialog", lambda dialog: dialog.accept())
    keys_page.get_by_role("button", name="Revoke key phone").click()
    expect(keys_page.get_by_role("status")).to_contain_text("revoked")
    expect(keys_page.locator("#key-1")).to_contain_text("revoked")


def test_revoking_asks_first_without_javascript(browser: Browser, web_server: GatewayServer) -> None:
    tab = _tab(browser, web_server, java_script_enabled=False)
    login(tab)
    secret = _create(tab, "tablet")
    tab.get_by_role("button", name="Revoke key tablet").click()
    expect(tab.get_by_role("heading", name=re.compile("Revoke key “tablet”"))).to_be_visible()
    assert web_server.client(key=secret).models.list().data  # asked, not revoked yet
    _shoot(tab, "keys-confirm")
    tab.get_by_role("link", name="Cancel").click()
    expect(tab.locator("#key-1")).not_to_contain_text("revoked")
    tab.get_by_role("button", name="Revoke key tablet").click()
    tab.get_by_role("button", name="Yes, revoke key tablet").click()
    expect(tab.get_by_role("status")).to_contain_text("revoked")
    expect(tab.locator("#key-1")).to_contain_text("revoked")
    tab.context.close()


def test_the_confirm_step_over_http(client: WebClient) -> None:
    page = client.post("/keys", {"name": "ci"}).text
    key_id = re.findall(r"/keys/(\d+)/revoke", page)[-1]
    asked = client.get(f"/keys/{key_id}/revoke")
    assert asked.status_code == 200 and "Revoke key “ci”?" in asked.text
    assert "revoked" not in client.get("/keys").text.split(f'id="key-{key_id}"')[1].split("</tr>")[0]
    assert client.get("/keys/999/revoke").status_code == 404
    assert client.post(f"/keys/{key_id}/revoke").status_code == 200
    assert "revoked" in client.get("/keys").text.split(f'id="key-{key_id}"')[1].split("</tr>")[0]

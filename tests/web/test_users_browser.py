"""People in a real browser: the admin adds one on the People page, she logs in by name (the name field takes
the focus once people exist), the top bar says who she is and offers only her pages."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from tests.gateway_server import GatewayServer
from tests.web.browser import base_url, shoot


def _tab(browser: Browser, server: GatewayServer) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base_url(server))
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    return tab


def test_the_admin_adds_a_person_who_logs_in_by_name(browser: Browser, web_server: GatewayServer, page: Page) -> None:
    page.goto("/users")
    expect(page.locator(".top .who")).to_have_text("admin")
    page.get_by_label("Name").fill("alice")
    page.get_by_label("Password").fill("alice-password")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("status")).to_contain_text("alice can log in now.")
    expect(page.get_by_role("row", name=re.compile("alice"))).to_contain_text("person")
    shoot(page, "users")

    tab = _tab(browser, web_server)
    tab.goto("/login")
    expect(tab.get_by_label("Name")).to_be_focused()  # people exist: the name comes first
    tab.keyboard.type("alice")
    tab.keyboard.press("Tab")
    tab.keyboard.type("alice-password")
    tab.keyboard.press("Enter")
    expect(tab).to_have_url(re.compile(r"/chat$"))
    expect(tab.locator(".top .who")).to_have_text("alice")
    nav = tab.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(["Chat", "Usage", "Keys"])
    shoot(tab, "chat-person", full_page=False)
    tab.get_by_role("button", name="Log out").click()
    expect(tab).to_have_url(re.compile(r"/login$"))
    tab.context.close()

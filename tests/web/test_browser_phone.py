"""The chat page on a phone (390 px, touch), issue 15: everything fits without scrolling sideways, Enter adds a
line and the Send button sends; on a desktop Enter still sends. The placeholder says which."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.web.look import rich_conversation


def _phone(browser: Browser, page: Page) -> Any:
    context = browser.new_context(
        base_url=page.url.split("/chat")[0],
        storage_state=page.context.storage_state(),
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    return tab


def _fits(tab: Page) -> None:
    wide = tab.evaluate("document.scrollingElement.scrollWidth")
    assert wide <= 390, f"{tab.url} is {wide} px wide on a 390 px phone"
    # Nothing sticks out of the window either (a clipped element would not widen the page).
    out = tab.evaluate("""() => [...document.querySelectorAll('main *, header.top *')].filter(e => {
      const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
      return r.width > 0 && s.visibility !== 'hidden' && !e.closest('.visually-hidden, .table-wrap, pre')
        && (r.right > 390.5 || r.left < -0.5);
    }).map(e => e.tagName + '.' + e.className).slice(0, 5)""")
    assert out == [], f"{tab.url}: outside the window: {out}"


def test_the_chat_works_on_a_phone(browser: Browser, page: Page) -> None:
    chat = rich_conversation(page)
    tab = _phone(browser, page)
    assert tab.evaluate("matchMedia('(pointer: coarse)').matches")
    tab.goto(chat)
    expect(tab.locator(".msg-assistant .md table")).to_have_count(1)
    _fits(tab)
    box = tab.get_by_label("Message", exact=True)
    expect(box).to_have_attribute("placeholder", re.compile("tap Send", re.I))
    box.tap()
    box.type("first line")
    box.press("Enter")  # a new line, not a send
    box.type("second line")
    expect(box).to_have_value("first line\nsecond line")
    assert tab.locator(".msg-assistant").count() == 1
    tab.get_by_role("button", name="Send", exact=True).tap()
    expect(tab.locator(".msg-assistant")).to_have_count(2)
    expect(tab.locator(".msg-assistant").last).to_contain_text("second line")
    expect(box).to_have_value("")
    _fits(tab)
    for path in ("/chat", "/models", "/usage", "/keys"):
        tab.goto(path)
        _fits(tab)
    tab.context.close()


def test_enter_still_sends_on_a_desktop(page: Page) -> None:
    rich_conversation(page, "hello")
    assert not page.evaluate("matchMedia('(pointer: coarse)').matches")
    box = page.get_by_label("Message", exact=True)
    expect(box).to_have_attribute("placeholder", re.compile("Enter sends"))
    box.fill("sent with Enter")
    box.press("Enter")
    expect(page.locator(".msg-assistant")).to_have_count(2)
    expect(page.locator(".msg-assistant").last).to_contain_text("sent with Enter")

"""The chat page in a real browser, issue 15: the newest message in view, a stopped answer rendered at once, the
settings summary after saving, the cursor in the message box after Start chat."""

from __future__ import annotations

import pytest

from tests.web.browser import shoot, start_chat

playwright_sync = pytest.importorskip("playwright.sync_api")
Browser, Page, expect = playwright_sync.Browser, playwright_sync.Page, playwright_sync.expect

LONG = " ".join(f"line{i} of a long message that wraps over the width of the page" for i in range(40))


def _last_message_in_view(tab: Page) -> bool:
    """The newest message's bottom edge is inside the window (and so is the rest of it, up to a window's height)."""
    script = """() => {
      const all = document.querySelectorAll('#messages .msg');
      const last = all[all.length - 1];
      const box = last.getBoundingClientRect();
      return box.bottom > 0 && box.bottom <= window.innerHeight + 1;
    }"""
    return bool(tab.evaluate(script))


def _wait_in_view(tab: Page) -> bool:
    for _ in range(40):  # up to 2 s: smooth scrolling is off, but the swap and the scroll are a frame apart
        if _last_message_in_view(tab):
            return True
        tab.wait_for_timeout(50)
    return False


def test_the_newest_message_is_in_view(page: Page) -> None:
    start_chat(page, "default")
    box = page.get_by_label("Message", exact=True)
    for n in range(3):
        box.fill(f"{n} {LONG}")
        box.press("Enter")
        expect(page.locator(".msg-assistant .meta")).to_have_count(n + 1)
    assert page.evaluate("document.documentElement.scrollHeight") > 3 * 800  # a long conversation
    page.reload()
    expect(page.locator(".msg-assistant .meta")).to_have_count(3)
    assert _wait_in_view(page), "after opening the conversation the newest message is below the fold"
    page.evaluate("window.scrollTo(0, 0)")
    box.fill("and one more")
    box.press("Enter")
    expect(page.locator(".msg-assistant .meta")).to_have_count(4)
    expect(page.locator(".msg-assistant").last).to_contain_text("You said: and one more")
    assert _wait_in_view(page), "after sending the answer is below the fold"
    shoot(page, "chat-scrolled", full_page=False)
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    expect(page.locator(".msg-assistant .meta")).to_have_count(4)
    assert _wait_in_view(page), "on a phone the newest message is below the fold"


def test_a_stopped_answer_renders_like_a_finished_one(page: Page) -> None:
    start_chat(page, "slow")
    page.get_by_label("Message", exact=True).fill("**Stop** me " + " ".join(f"x{i}" for i in range(60)))
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg-assistant .streaming strong")).to_have_text("Stop")  # rendered while it streams
    page.get_by_role("button", name="Stop").click()
    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".md strong")).to_have_text("Stop")  # rendered without a reload
    expect(answer.locator(".note")).to_have_text("Stopped before the end.")
    expect(answer.locator(".meta")).to_contain_text("answered by slow/echo")
    assert answer.locator(".streaming").count() == 0
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    shoot(page, "chat-stopped")


def test_saving_settings_updates_the_summary(page: Page) -> None:
    start_chat(page, "default")
    summary = page.locator(".settings > summary")
    expect(summary).to_have_text("Settings: model defaults")
    summary.click()
    settings = page.locator("#settings")
    settings.get_by_label("Temperature").fill("0.7")
    settings.get_by_label("Max tokens").fill("40")
    settings.get_by_role("button", name="Save settings").click()
    expect(page.locator("#settings [role=status]")).to_have_text("Saved.")
    expect(summary).to_have_text("Settings: temperature 0.7, max 40 tokens")
    shoot(page, "chat-settings")


def test_start_chat_puts_the_cursor_in_the_message_box(page: Page) -> None:
    start_chat(page, "default")
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    page.keyboard.type("typed straight away")
    page.keyboard.press("Enter")
    expect(page.locator(".msg-assistant .md")).to_contain_text("You said: typed straight away")

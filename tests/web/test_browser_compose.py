"""The type-first chat in a real browser: /chat opens ready to type, the first message makes the conversation (the
address, title and sidebar follow), the header's model picker changes the model between messages, search filters
the sidebar, and "New chat" starts over."""

from __future__ import annotations

import re

import pytest

from tests.web.browser import shoot

playwright_sync = pytest.importorskip("playwright.sync_api")
Page, expect = playwright_sync.Page, playwright_sync.expect


def test_type_first_then_switch_models_between_messages(page: Page) -> None:
    page.goto("/chat")
    box = page.get_by_label("Message", exact=True)
    expect(box).to_be_focused()
    picker = page.get_by_label("Model or agent")
    expect(picker).to_have_value("default")
    shoot(page, "chat-new")
    page.locator("#settings-panel summary").click()
    page.get_by_label("Temperature").fill("0.3")
    page.keyboard.press("Tab")
    box.fill("First question, typed straight away")
    box.press("Enter")
    answer = page.locator(".msg-assistant .meta").last
    expect(answer).to_contain_text("answered by echo/echo")
    expect(page).to_have_url(re.compile(r"/chat/\d+$"))
    expect(page.locator("#conv-title")).to_have_text("First question, typed straight away")
    expect(page.locator("#conversation-list a[aria-current=page]")).to_contain_text("First question")
    expect(page.locator("#settings-summary")).to_have_text("temperature 0.3")
    expect(page.locator("#context-text")).to_contain_text("tokens in context")
    picker.select_option("slow")
    box.fill("Second one, to the slow agent")
    box.press("Enter")
    expect(page.locator(".msg-assistant .meta")).to_have_count(2)
    expect(page.locator(".msg-assistant .meta").last).to_contain_text("answered by slow/echo")
    page.reload()
    expect(page.locator(".msg")).to_have_count(4)
    expect(page.get_by_label("Model or agent")).to_have_value("slow")
    shoot(page, "chat-two-models")
    page.get_by_role("link", name="New chat").click()
    expect(page).to_have_url(re.compile(r"/chat$"))
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.get_by_label("Message", exact=True)).to_be_focused()


def test_search_filters_the_sidebar(page: Page) -> None:
    for text in ("Recipe for bread", "Fixing the bicycle chain"):
        page.goto("/chat")
        page.get_by_label("Message", exact=True).fill(text)
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/chat/\d+$"))
    page.goto("/chat")
    links = page.locator("#conversation-list a")
    expect(links).to_have_count(2)
    page.get_by_label("Search conversations").fill("bicycle")
    expect(links).to_have_count(1)
    expect(links.first).to_contain_text("Fixing the bicycle chain")
    page.get_by_label("Search conversations").fill("said: Recipe")  # words of an answer, not a title
    expect(links).to_have_count(1)
    expect(links.first.locator(".snippet")).to_contain_text("You said: Recipe for bread")
    shoot(page, "chat-search")
    page.get_by_label("Search conversations").fill("")
    expect(links).to_have_count(2)

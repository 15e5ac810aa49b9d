"""Branches in a real browser (issue 15): Regenerate keeps versions to flip between ("< 2 / 3 >"), the choice survives a
reload; editing a user message starts a branch with its own answer; the model is sent only the branch shown."""

from __future__ import annotations

import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.web.browser import shoot, start_chat

playwright_sync = pytest.importorskip("playwright.sync_api")
Page, expect = playwright_sync.Page, playwright_sync.expect


def _sent(remote: FakeUpstream) -> list[str]:
    body = remote.requests[-1].body
    assert body is not None
    return [m["content"] for m in body["messages"]]


def _idle(tab: Page) -> None:
    """The answer is over: the streamed body is gone and Send is enabled again."""
    expect(tab.locator("#messages .streaming, #messages .raw")).to_have_count(0)
    expect(tab.locator("#send")).to_be_enabled()


def test_versions_and_edited_branches(page: Page, remote: FakeUpstream) -> None:
    replies = ("answer one", "answer two", "answer three", "answer four", "edited answer")
    remote.script(*(Reply(content=text) for text in replies))
    start_chat(page, "remote")
    box = page.get_by_label("Message", exact=True)
    box.fill("first question")
    box.press("Enter")
    answer = page.locator(".msg-assistant").last
    expect(answer).to_contain_text("answer one")
    _idle(page)
    for text, version in (("answer two", "2 / 2"), ("answer three", "3 / 3")):
        page.get_by_role("button", name="Regenerate").click()
        expect(answer).to_contain_text(text)
        expect(answer.locator(".version")).to_have_text(version)
        _idle(page)
    assert _sent(remote) == ["first question"]
    expect(page.locator(".msg")).to_have_count(2)  # the versions are not stacked up

    url = page.url
    for version in ("2 / 3", "1 / 3"):
        answer.get_by_role("button", name="Previous version").click()
        expect(answer.locator(".version")).to_have_text(version)
    expect(answer).to_contain_text("answer one")
    expect(answer.get_by_role("button", name="Previous version")).to_be_disabled()
    assert page.url == url  # no navigation: #messages was swapped
    page.reload()
    answer = page.locator(".msg-assistant").last
    expect(answer).to_contain_text("answer one")
    expect(answer.locator(".version")).to_have_text("1 / 3")
    shoot(page, "branches-versions")

    box.fill("second question")
    box.press("Enter")
    expect(page.locator(".msg-assistant").last).to_contain_text("answer four")
    _idle(page)
    assert _sent(remote) == ["first question", "answer one", "second question"]

    first = page.locator(".msg-user").first
    first.get_by_role("link", name="Edit").click()
    editor = page.get_by_label("Edited message")
    expect(editor).to_have_value("first question")
    editor.fill("something else")
    page.get_by_role("link", name="Cancel").click()  # leaves everything as it was
    expect(page.get_by_label("Edited message")).to_have_count(0)
    expect(page.locator(".msg")).to_have_count(4)
    expect(page.locator(".msg-user").first).to_contain_text("first question")

    page.locator(".msg-user").first.get_by_role("link", name="Edit").click()
    page.get_by_label("Edited message").fill("first question, edited")
    shoot(page, "branches-editing")
    page.get_by_role("button", name="Save and send").click()
    expect(page.locator(".msg-assistant").last).to_contain_text("edited answer")
    _idle(page)
    expect(page.locator(".msg")).to_have_count(2)
    first = page.locator(".msg-user").first
    expect(first).to_contain_text("first question, edited")
    expect(first.locator(".version")).to_have_text("2 / 2")
    assert _sent(remote) == ["first question, edited"]  # only the new branch

    first.get_by_role("button", name="Previous version").click()  # the old branch, whole
    expect(page.locator(".msg")).to_have_count(4)
    texts = page.locator(".msg .body").all_inner_texts()
    assert [t.strip() for t in texts] == ["first question", "answer one", "second question", "answer four"]
    expect(page.locator(".msg-user").first.locator(".version")).to_have_text("1 / 2")
    page.reload()
    expect(page.locator(".msg")).to_have_count(4)
    shoot(page, "branches-old-branch")
    page.emulate_media(color_scheme="dark")
    shoot(page, "branches-dark")


def test_editing_on_a_new_chat_without_a_reload(page: Page) -> None:
    page.goto("/chat")  # type first: the first message creates the conversation
    box = page.get_by_label("Message", exact=True)
    box.fill("hello there")
    box.press("Enter")
    expect(page.locator(".msg-assistant").last).to_contain_text("You said: hello there")
    _idle(page)
    page.locator(".msg-user").first.get_by_role("link", name="Edit").click()
    page.get_by_label("Edited message").fill("hello again")
    page.get_by_role("button", name="Save and send").click()
    expect(page.locator(".msg-assistant").last).to_contain_text("You said: hello again")
    _idle(page)
    expect(page.locator(".msg-user .version")).to_have_text("2 / 2")
    expect(page.get_by_label("Message", exact=True)).to_be_focused()

"""Answers read well while they stream, issue 15, in a real browser: Markdown and highlighted code with its Copy
button before the answer ends, Copy buttons that put the exact code or the message's Markdown source in the
clipboard (the Clipboard API, and the textarea fallback of plain http on a LAN address), the same after a reload."""

from __future__ import annotations

import pytest

from tests.web.browser import shoot, start_chat

playwright_sync = pytest.importorskip("playwright.sync_api")
Page, expect = playwright_sync.Page, playwright_sync.expect

CODE = "def add(a, b):\n    return a + b  # sum"
MESSAGE = f"Here is **code**:\n```python\n{CODE}\n```\n" + " ".join(f"tail{i}" for i in range(30))
ANSWER = f"You said: {MESSAGE}"  # the slow echo model's answer, a word every 0.2 s


def _clipboard(tab: Page) -> str:
    return str(tab.evaluate("navigator.clipboard.readText()"))


def test_code_is_highlighted_with_a_copy_button_while_the_answer_streams(page: Page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    start_chat(page, "slow")
    page.get_by_label("Message", exact=True).fill(MESSAGE)
    page.get_by_role("button", name="Send").click()
    streaming = page.locator(".msg-assistant .streaming[aria-busy=true]")
    expect(streaming.locator(".code-block .hl-k").first).to_have_text("def ", timeout=15_000)
    expect(streaming.locator("strong")).to_have_text("code")
    expect(streaming.locator(".code-block .code-lang")).to_have_text("python")
    expect(streaming.get_by_role("button", name="Copy code")).to_be_visible()
    assert "tail25" not in streaming.inner_text()  # all of it before the answer ends
    shoot(page, "streaming-code")

    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".md[hx-ignore]")).to_contain_text("tail29", timeout=20_000)
    rendered = answer.locator(".md").inner_html()
    answer.get_by_role("button", name="Copy code").click()
    expect(answer.get_by_role("button", name="Copy code")).to_have_text("Copied")
    assert _clipboard(page) == CODE
    answer.get_by_role("button", name="Copy message").click()
    assert _clipboard(page) == ANSWER  # the Markdown source, not the rendered text
    page.locator(".msg-user").last.get_by_role("button", name="Copy message").click()
    assert _clipboard(page) == MESSAGE
    expect(answer.get_by_role("button", name="Copy code")).to_have_text("Copy", timeout=3_000)
    shoot(page, "answer-code")

    page.reload()
    again = page.locator(".msg-assistant").last
    expect(again.locator(".code-block .hl-k").first).to_have_text("def ")
    assert again.locator(".md").inner_html() == rendered  # a stored conversation renders the same
    again.get_by_role("button", name="Copy code").click()
    assert _clipboard(page) == CODE
    page.emulate_media(color_scheme="dark")  # the theme "auto" follows it
    expect(again.locator(".code-block pre")).to_have_css("background-color", "rgb(22, 27, 34)")
    shoot(page, "answer-code-dark")


def test_copy_falls_back_to_a_textarea_without_the_clipboard_api(page: Page) -> None:
    """Plain http on a LAN address is no secure context: no navigator.clipboard, so execCommand('copy')."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    start_chat(page, "default")
    page.get_by_label("Message", exact=True).fill("Code:\n```\nplain <code> & more\n```")
    page.keyboard.press("Enter")
    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".md[hx-ignore] .code-block")).to_be_visible()
    page.evaluate("""() => {
      window.copied = [];
      document.addEventListener("copy", (e) => {
        const area = e.target; window.copied.push(area.value.slice(area.selectionStart, area.selectionEnd));
      });
      Object.defineProperty(navigator, "clipboard", {value: undefined, configurable: true});
    }""")
    answer.get_by_role("button", name="Copy code").click()
    expect(answer.get_by_role("button", name="Copy code")).to_have_text("Copied")
    assert page.evaluate("window.copied") == ["plain <code> & more"]
    assert page.locator("textarea.copy-buffer").count() == 0  # the helper textarea is gone again


def test_latex_is_drawn_as_mathml(page: Page) -> None:
    start_chat(page, "default")
    formula = "$$\n\\sum_{i=1}^n i = \\frac{n(n+1)}{2}\n$$"
    page.get_by_label("Message", exact=True).fill(f"Area $\\pi r^2$ for $5 and $10\n{formula}")
    page.keyboard.press("Enter")
    answer = page.locator(".msg-assistant .md[hx-ignore]").last
    expect(answer.locator("math")).to_have_count(2)
    expect(answer).to_contain_text("for $5 and $10")
    inline = answer.locator("math").first.bounding_box()
    block = answer.locator(".math-block math").bounding_box()
    assert inline and block and inline["width"] > 10 and block["height"] > 1.5 * inline["height"]  # drawn, a fraction
    answer.locator(".math-block").scroll_into_view_if_needed()
    shoot(page, "math")
    page.emulate_media(color_scheme="dark")
    shoot(page, "math-dark")

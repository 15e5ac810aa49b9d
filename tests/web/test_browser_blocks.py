"""A long answer streamed as block updates in a real browser: after every update the answer's body is exactly the
render of the text so far, blocks already shown stay the same nodes (a Copy clicked mid-stream keeps working),
and the answer ends identical to the reloaded page's, highlighted, with working Copy buttons."""

from __future__ import annotations

import re
from typing import Any

import pytest

from minigate.web.chat_stream import RENDER_EVERY
from minigate.web.markdown import MarkdownRenderer
from tests.fakes.upstream import FakeUpstream, Reply
from tests.web.blocks import UPDATE, bodies
from tests.web.browser import shoot, start_chat

playwright_sync = pytest.importorskip("playwright.sync_api")
Page, expect = playwright_sync.Page, playwright_sync.expect

GO = "func main() {\n\tfor i := 0; i < 3; i++ {\n\t\tfmt.Println(i)\n\t}\n}"
PYTHON = "def twice(x):\n\treturn 2 * x  # doubled"
ANSWER = (
    f"Here is the **plan**:\n\n1. Read\n2. Parse\n   - lines\n   - words\n3. Print\n\n```go\n{GO}\n```\n\n"
    "| step | time |\n|---|---:|\n| read | 1 |\n| parse | 2 |\n\nThen $x^2$ grows, and\n$$\n\\frac{a}{b}\n$$\n\n"
    f"```python\n{PYTHON}\n```\n\n> Quoted\n> advice.\n\nDone at last."
)
# Every SSE message as it arrives: its data and the streaming answer's body right after it was applied.
RECORD = """() => {
  window.seen = [];
  document.addEventListener("htmx:sse:after:message", (e) => {
    const body = document.querySelector("#messages .streaming");
    window.seen.push([e.detail.message.data, body ? body.innerHTML : null]);
  });
}"""
# How the browser serialises markup it parsed (attribute quotes, entities, MathML): what innerHTML gives back.
NORMALISE = """(texts) => texts.map((html) => { const d = document.createElement("div"); d.innerHTML = html;
  return d.innerHTML; })"""


def _clipboard(tab: Page) -> str:
    return str(tab.evaluate("navigator.clipboard.readText()"))


def _shown(html: str) -> str:
    """A body as rendered, less what clicking its first Copy button added (its feedback and remembered label)."""
    return html.replace(' data-label="Copy"', "").replace(">Copied<", ">Copy<")


def test_a_long_answer_streamed_as_blocks_ends_as_the_reloaded_page(page: Page, remote: FakeUpstream) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    remote.set_default(Reply(content=ANSWER, interval=RENDER_EVERY * 1.5))  # a render per word
    start_chat(page, "remote")
    page.evaluate(RECORD)
    page.get_by_label("Message", exact=True).fill("Explain")
    page.get_by_role("button", name="Send").click()

    streaming = page.locator(".msg-assistant .streaming[aria-busy=true]")
    go = streaming.locator(".code-block").first
    expect(streaming.locator("table")).to_be_visible(timeout=20_000)  # the Go block is closed, more follows
    expect(go.locator(".hl-k").first).to_have_text("func ")
    go.get_by_role("button", name="Copy code").click()  # mid-stream: the block is kept, not swapped again
    expect(go.get_by_role("button", name="Copy code")).to_have_text("Copied")
    assert _clipboard(page) == GO
    go.get_by_role("button", name="Copy code").evaluate("b => { window.goCopy = b; }")
    shoot(page, "streaming-blocks")

    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".meta")).to_contain_text("answered by remote/gpt-4o-mini", timeout=30_000)
    assert page.evaluate("document.contains(window.goCopy)") is False  # the final event replaced the message
    seen: list[list[Any]] = page.evaluate("window.seen")
    message = int(re.findall(r'id="msg-(\d+)-text"', seen[0][0])[-1])
    updates = [(data, html) for data, html in seen if UPDATE.fullmatch(data)]
    expected = page.evaluate(NORMALISE, bodies([data for data, _ in updates], message))
    assert len(updates) >= 20
    for (_, html), want in zip(updates, expected, strict=True):
        assert _shown(html) == want  # the body after each update: exactly the render the server meant
    keeps = [int(UPDATE.fullmatch(data)[2]) for data, _ in updates]  # type: ignore[index]
    sent, whole_bodies = sum(len(data) for data, _ in updates), sum(len(html) for _, html in updates)
    assert max(keeps) >= 8 and 2 * sent < whole_bodies, (sent, whole_bodies)  # the tail, not the whole answer

    chat = MarkdownRenderer(code_tools=True)
    all_but_last = ANSWER.rsplit(" ", 1)[0]
    whole, nearly = page.evaluate(NORMALISE, [str(chat.render(ANSWER)), str(chat.render(all_but_last))])
    assert _shown(updates[-1][1]) in (whole, nearly)  # streamed to the end (the last word may come with the final)
    finished = answer.locator(".md").inner_html()
    assert finished == whole
    page.reload()
    again = page.locator(".msg-assistant").last
    expect(again.locator(".code-block .hl-k").first).to_have_text("func ")
    assert again.locator(".md").inner_html() == finished  # the reloaded page shows the same answer
    again.get_by_role("button", name="Copy code").last.click()
    expect(again.get_by_role("button", name="Copy code").last).to_have_text("Copied")
    assert _clipboard(page) == PYTHON
    assert again.locator(".math-block math").count() == 1

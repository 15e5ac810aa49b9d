"""The web UI in a real browser: Playwright driving Debian's chromium against a gateway on 127.0.0.1.

Screenshots of every page, desktop and 390 px wide, go to ``test-artifacts/`` (look at them).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.gateway_server import GatewayServer
from tests.web.browser import base_url, login, shoot, start_chat
from tests.web.helpers import PASSWORD

playwright_sync = pytest.importorskip("playwright.sync_api")
Browser, Page, expect = playwright_sync.Browser, playwright_sync.Page, playwright_sync.expect

XSS_ANSWER = (
    'Inert: <script>window.__pwned = 1</script> and <img src=x onerror="window.__pwned = 2"> '
    "and [click](javascript:window.__pwned=3) and ![tracker](http://127.0.0.9:9/leak.png?q=secret) "
    "and **bold** and `code`"
)


def test_login_page(browser: Browser, web_server: GatewayServer) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base_url(web_server))
    tab = context.new_page()
    tab.goto("/models")
    expect(tab).to_have_url(re.compile(r"/login\?next=/models$"))
    tab.get_by_label("Password or admin key").fill("wrong")
    tab.get_by_role("button", name="Log in").click()
    expect(tab.get_by_role("alert")).to_contain_text("Wrong password")
    shoot(tab, "login")
    context.close()


def test_chat_streams_the_answer_token_by_token(page: Page, web_server: GatewayServer) -> None:
    start_chat(page, "slow")
    words = " ".join(f"w{i}" for i in range(12))
    page.get_by_label("Message", exact=True).fill(f"Stream {words}")
    page.keyboard.press("Enter")
    streaming = page.locator(".msg-assistant .streaming[aria-busy=true]")
    expect(streaming).to_contain_text("You said:")  # part of the answer is there...
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    assert "w11" not in streaming.inner_text()  # ...before the rest of it
    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".md")).to_contain_text("You said: Stream w0 w1", timeout=15_000)
    expect(answer.locator(".meta")).to_contain_text("answered by slow/echo")
    expect(answer.locator(".meta")).to_contain_text("tokens/s")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_label("Message", exact=True)).to_have_value("")
    expect(page.locator("#chat-status")).to_have_text("Answer finished.")
    rows = web_server.wait_rows(1)
    assert rows[-1]["provider"] == "slow" and rows[-1]["status"] == 200 and rows[-1]["streamed"] == 1
    shoot(page, "chat")
    page.reload()  # the conversation is stored: it comes back as it was
    expect(page.locator(".msg-assistant .md")).to_contain_text("You said: Stream w0")
    expect(page.locator("#conversation-list")).to_contain_text("Stream w0")


def test_stop_generation(page: Page, web_server: GatewayServer) -> None:
    start_chat(page, "slow")
    page.get_by_label("Message", exact=True).fill("Stop me " + " ".join(f"x{i}" for i in range(60)))
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg-assistant .streaming")).to_contain_text("said:")
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    rows = web_server.wait_rows(1)
    assert rows[-1]["status"] == 499  # the upstream call was cancelled and recorded as such
    page.reload()
    answer = page.locator(".msg-assistant").last
    expect(answer).to_contain_text("Stopped before the end.")
    assert "x59" not in answer.inner_text()
    expect(page.get_by_role("button", name="Regenerate")).to_be_visible()


def test_settings_regenerate_rename_and_delete(page: Page) -> None:
    start_chat(page, "default")
    page.get_by_label("Message", exact=True).fill("first question")
    page.keyboard.press("Enter")
    expect(page.locator(".msg-assistant .md")).to_contain_text("You said: first question")
    page.get_by_text("Settings:").click()
    settings = page.locator("#settings")
    settings.get_by_label("System prompt", exact=True).fill("Answer briefly.")
    settings.get_by_label("Max tokens").fill("3")
    settings.get_by_role("button", name="Save settings").click()
    expect(page.locator("#settings [role=status]")).to_have_text("Saved.")
    page.get_by_role("button", name="Regenerate").click()
    expect(page.locator(".msg-assistant .md")).to_have_text("You said: first")  # max 3 tokens now
    expect(page.locator(".msg-assistant")).to_have_count(1)
    page.locator(".conv-tools > summary").click()
    page.get_by_label("New title").fill("Renamed chat")
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Renamed chat")
    page.locator(".conv-tools > summary").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete conversation").click()
    expect(page).to_have_url(re.compile(r"/chat$"))
    expect(page.locator("#conversation-list")).not_to_contain_text("Renamed chat")


def test_fallback_hops_are_shown(page: Page, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content="unused"))
    remote.script(*[__import__("tests.fakes.upstream", fromlist=["Status"]).Status(503)])
    start_chat(page, "remote")
    page.get_by_label("Message", exact=True).fill("who answers?")
    page.keyboard.press("Enter")
    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".meta")).to_contain_text("answered by echo/echo")
    expect(answer.locator(".hops summary")).to_have_text("1 fallback")
    answer.locator(".hops summary").click()
    expect(answer.locator(".hops")).to_contain_text("remote/gpt-4o-mini: HTTP 503")


def test_answer_markup_is_inert(page: Page, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content=XSS_ANSWER))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    start_chat(page, "remote")
    page.get_by_label("Message", exact=True).fill("say something nasty")
    page.keyboard.press("Enter")
    answer = page.locator(".msg-assistant .md").last
    expect(answer).to_contain_text("Inert:")
    expect(answer.locator("strong")).to_have_text("bold")
    page.reload()
    answer = page.locator(".msg-assistant .md").last
    expect(answer).to_contain_text("<script>")  # shown as text
    assert answer.locator("script, img, iframe, [onerror], [onclick]").count() == 0
    assert answer.locator("a[href^='javascript']").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert not dialogs
    assert not [url for url in requested if "127.0.0.9" in url or "leak.png" in url]
    shoot(page, "chat-inert")


def test_edit_a_fallback_chain(page: Page, web_server: GatewayServer) -> None:
    page.goto("/models")
    expect(page.get_by_role("heading", name="Providers")).to_be_visible()
    agent = page.locator("#agent-defaults")
    agent.get_by_label("Primary").fill("echo/nonexistent")
    agent.get_by_role("button", name="Save chain").click()
    expect(page.locator("#agent-defaults [role=alert]")).to_contain_text("does not list model 'nonexistent'")
    agent = page.locator("#agent-defaults")
    agent.get_by_label("Primary").fill("echo/other")
    agent.get_by_label("Fallback 1").fill("slow/echo")
    agent.get_by_role("button", name="Save chain").click()
    expect(page.locator("#agent-defaults .chain-now")).to_contain_text("echo/other → slow/echo")
    answer = web_server.client().chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
    assert answer.model == "echo/other"  # applied without restart
    shoot(page, "models")
    page.locator("#agent-defaults").get_by_role("button", name=re.compile("Reset to configured")).click()
    expect(page.locator("#agent-defaults .chain-now")).to_contain_text("echo/echo")


def test_usage_page_shows_the_request(page: Page) -> None:
    start_chat(page, "default")
    page.get_by_label("Message", exact=True).fill("count me")
    page.keyboard.press("Enter")
    expect(page.locator(".msg-assistant .md")).to_contain_text("You said: count me")
    page.get_by_role("link", name="Usage").click()
    expect(page.locator("#total-requests")).to_have_text("1")
    expect(page.locator("table.recent tbody")).to_contain_text("echo/echo")
    assert page.locator("svg.chart").count() == 5  # requests, tokens, cost, latency, errors and fallbacks
    expect(page.locator("svg.chart path.line").first).to_be_attached()
    page.get_by_label("Group by").select_option("provider")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="By provider")).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    assert "echo" in Path(download.value.path()).read_text()
    shoot(page, "usage")


def test_create_and_revoke_a_key(page: Page, web_server: GatewayServer) -> None:
    page.goto("/keys")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("The new key").input_value()
    assert secret.startswith("mg-")
    assert web_server.client(key=secret).models.list().data  # the key works
    shoot(page, "keys")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke key laptop").click()
    expect(page.get_by_role("status")).to_contain_text("revoked")
    expect(page.locator("table.keys")).to_contain_text("revoked")
    assert secret not in page.content()  # shown once only


def test_chat_page_weight(browser: Browser, web_server: GatewayServer) -> None:
    context = browser.new_context(base_url=base_url(web_server))
    tab = context.new_page()
    login(tab)
    start_chat(tab, "default")
    sizes: dict[str, int] = {}
    tab.on("response", lambda response: sizes.__setitem__(response.url, len(response.body())))
    tab.reload(wait_until="networkidle")
    total = sum(sizes.values())
    assert any(url.endswith(".js") for url in sizes) and any(url.endswith(".css") for url in sizes)
    assert total <= 100 * 1024, f"the chat page loads {total} bytes: {sizes}"
    context.close()


def test_keyboard_only_login_and_chat(browser: Browser, web_server: GatewayServer) -> None:
    context = browser.new_context(base_url=base_url(web_server))
    tab = context.new_page()
    tab.goto("/login")
    # The field takes the focus by itself (autofocus); wait for that before typing, or a loaded machine can
    # drop the first keys into the page.
    expect(tab.get_by_label("Password or admin key")).to_be_focused()
    tab.keyboard.type(PASSWORD)
    tab.keyboard.press("Enter")
    expect(tab).to_have_url(re.compile(r"/chat$"))
    expect(tab.get_by_label("Message", exact=True)).to_be_focused()  # type first: the cursor waits in the box
    tab.keyboard.type("hello from the keyboard")
    tab.keyboard.press("Enter")
    expect(tab.locator(".msg-assistant .md")).to_contain_text("You said: hello from the keyboard")
    tab.goto("/models")  # a page without a box to type in: the first Tab reaches the skip link
    tab.keyboard.press("Tab")
    assert tab.evaluate("document.activeElement.textContent") == "Skip to content"
    context.close()

"""The API docs page (``/admin/api/docs``): vendored Swagger UI over the gateway's OpenAPI document, served like
every static file; in a real browser it lists the admin operations and runs one with an admin key, loading
nothing from elsewhere and breaking no Content-Security-Policy rule."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from minigate.web.api_docs import SWAGGER_UI
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.web.browser import base_url, shoot
from tests.web.helpers import WebClient

playwright_sync = pytest.importorskip("playwright.sync_api")
Browser, Page = playwright_sync.Browser, playwright_sync.Page
STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
ADMIN_OPERATIONS = [
    ("GET", "/admin/api/users"),
    ("POST", "/admin/api/users"),
    ("PATCH", "/admin/api/users/{user_id}"),
    ("DELETE", "/admin/api/users/{user_id}"),
    ("GET", "/admin/api/usage"),
    ("GET", "/admin/api/usage/summary"),
    ("GET", "/admin/api/prices"),
    ("GET", "/admin/api/keys"),
    ("PATCH", "/admin/api/keys/{key_id}"),
    ("GET", "/admin/api/models"),
]


def test_the_page_links_the_vendored_files_by_hash(shared_anonymous: WebClient) -> None:
    page = shared_anonymous.get("/admin/api/docs")  # no login: the page is as public as the document it draws
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    links = re.findall(r'(?:href|src)="([^"]+)"', page.text)
    assert 'data-url="/schema/openapi.json"' in page.text
    assert not [link for link in links if "//" in link], links  # nothing from elsewhere
    for name in (*SWAGGER_UI, "api-docs-1.js"):
        stem, ext = name.rsplit(".", 1)
        link = next(link for link in links if re.fullmatch(rf"/static/{re.escape(stem)}\.[0-9a-f]{{8}}\.{ext}", link))
        served = shared_anonymous.get(link, headers={"accept-encoding": "gzip"})
        assert served.status_code == 200 and served.content == (STATIC / name).read_bytes()
        assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
        if name in SWAGGER_UI:  # (the small starter is below gzip's threshold)
            assert served.headers["content-encoding"] == "gzip"


def test_the_vendored_files_say_where_they_come_from() -> None:
    notes = (STATIC / "swagger-ui-5.36.0.README.md").read_text()
    assert "swagger-ui-dist@5.36.0" in notes and "Apache-2.0" in notes
    assert "Apache License" in (STATIC / "swagger-ui-5.36.0.LICENSE.txt").read_text()
    for name in SWAGGER_UI:
        assert "5.36.0" in name and (STATIC / name).is_file()


@pytest.fixture
def docs(browser: Browser, web_server: GatewayServer) -> Iterator[tuple[Page, list[str], list[str]]]:
    """The docs page, with every request the page made and every console error and CSP report it raised."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base_url(web_server))
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    requests: list[str] = []
    problems: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.goto("/admin/api/docs")
    yield tab, requests, problems
    context.close()


def test_the_page_renders_and_lists_the_admin_operations(docs: tuple[Page, list[str], list[str]]) -> None:
    tab, requests, problems = docs
    for method, path in ADMIN_OPERATIONS:
        block = tab.locator(f".opblock-{method.lower()} .opblock-summary-path[data-path='{path}']")
        expect(block).to_have_count(1)
    expect(tab.locator(".opblock-summary-path[data-path='/v1/chat/completions']")).to_have_count(1)
    shoot(tab, "api-docs", full_page=False)
    assert not problems, problems  # no script error, no Content-Security-Policy refusal
    assert all(url.startswith(base_url_of(tab)) for url in requests), requests


def test_an_admin_runs_an_operation_from_the_page(docs: tuple[Page, list[str], list[str]]) -> None:
    tab, requests, problems = docs
    tab.locator("button.authorize").first.click()
    tab.locator(".auth-container input").first.fill(ADMIN_KEY)
    tab.locator(".auth-container button.authorize").first.click()
    tab.locator(".auth-btn-wrapper button.btn-done").first.click()
    operation = tab.locator(".opblock-get:has(.opblock-summary-path[data-path='/admin/api/users'])")
    operation.locator(".opblock-summary").first.click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    expect(operation.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    expect(operation.locator(".live-responses-table tbody .microlight").first).to_contain_text('"users"')
    assert not problems, problems
    assert all(url.startswith(base_url_of(tab)) for url in requests), requests


def base_url_of(tab: Page) -> str:
    """The gateway's origin the tab is on."""
    match = re.match(r"https?://[^/]+", tab.url)
    assert match is not None
    return match.group(0)

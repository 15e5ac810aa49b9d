"""``/favicon.ico``: a small vendored icon, served to anyone with long cache headers and linked from every page."""

from __future__ import annotations

import re

from tests.web.helpers import WebClient


def test_the_favicon_is_served_and_cached(shared_anonymous: WebClient) -> None:
    response = shared_anonymous.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert response.content[:4] == b"\x00\x00\x01\x00" and len(response.content) < 4096  # an ICO, and small
    cache = response.headers["cache-control"]
    max_age = re.search(r"max-age=(\d+)", cache)
    assert "public" in cache and max_age is not None and int(max_age.group(1)) >= 7 * 86400


def test_every_page_links_it(shared_anonymous: WebClient, shared_admin: WebClient) -> None:
    pages = [shared_anonymous.get("/login")] + [shared_admin.get(p) for p in ("/chat", "/models", "/usage", "/keys")]
    for page in pages:
        assert page.status_code == 200
        link = re.search(r'<link rel="icon"[^>]*href="([^"]+)"', page.text)
        assert link is not None, page.url
        assert shared_anonymous.get(link.group(1)).status_code == 200

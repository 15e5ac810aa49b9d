"""Static files with their content's hash in the address, cached for a year, gzipped; HTML pages gzipped; SSE
streams and the /v1 API never compressed (issue 15, page weight)."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
GZIP = {"accept-encoding": "gzip"}
IDENTITY = {"accept-encoding": "identity"}


def _links(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="(/static/[^"]+)"', html)


def test_pages_link_static_files_by_content_hash(shared_admin: WebClient) -> None:
    links = _links(shared_admin.get("/chat").text)
    css = next(link for link in links if link.startswith("/static/app."))
    digest = hashlib.sha256((STATIC / "app.css").read_bytes()).hexdigest()[:8]
    assert css == f"/static/app.{digest}.css"
    assert any(link.startswith("/static/htmx-4.0.1.min.") for link in links)
    for link in links:
        assert re.search(r"\.[0-9a-f]{8}\.(css|js)$", link), link


def test_a_hashed_address_is_cached_for_a_year_and_gzipped(shared_admin: WebClient) -> None:
    for link in _links(shared_admin.get("/chat").text):
        response = shared_admin.get(link, headers=GZIP)
        assert response.status_code == 200, link
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["content-encoding"] == "gzip", link
        assert "accept-encoding" in response.headers["vary"]
        name = re.sub(r"\.[0-9a-f]{8}(\.\w+)$", r"\1", link.removeprefix("/static/"))
        assert response.content == (STATIC / name).read_bytes()  # httpx took the gzip off
        assert int(response.headers["content-length"]) < len(response.content)
        plain = shared_admin.get(link, headers=IDENTITY)
        assert "content-encoding" not in plain.headers and plain.content == response.content


def test_etag_gives_304_and_old_or_bare_addresses_revalidate(shared_admin: WebClient) -> None:
    css = next(link for link in _links(shared_admin.get("/chat").text) if link.startswith("/static/app."))
    first = shared_admin.get(css)
    again = shared_admin.get(css, headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for old in ("/static/app.css", "/static/app.00000000.css"):
        response = shared_admin.get(old)
        assert response.status_code == 200 and response.content == first.content
        assert response.headers["cache-control"] == "no-cache"
    assert shared_admin.get("/static/nothing.css").status_code == 404
    assert shared_admin.get("/static/nothing.0123abcd.css").status_code == 404


def test_html_pages_are_gzipped_when_accepted(shared_admin: WebClient, shared_anonymous: WebClient) -> None:
    for client, path in [(shared_anonymous, "/login"), *((shared_admin, p) for p in ("/chat", "/models", "/usage"))]:
        raw = client.raw()
        raw.cookies = client.http.cookies
        with raw.stream("GET", path, headers=GZIP) as response:
            body = b"".join(response.iter_raw())
        raw.close()
        assert response.status_code == 200, path
        assert response.headers["content-encoding"] == "gzip", path
        assert response.headers["vary"] == "accept-encoding"
        html = gzip.decompress(body).decode()
        assert html.startswith("<!doctype html>") and len(body) < len(html) * 0.6
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        plain = client.get(path, headers=IDENTITY)
        assert "content-encoding" not in plain.headers and plain.text[:200] == html[:200]


def test_chat_streams_and_the_api_are_never_compressed(web_app: InProcessGateway, client: WebClient) -> None:
    conversation = client.new_chat()
    padded = "a message long enough to be worth compressing " * 60
    response = client.post(f"/chat/{conversation}/send", {"content": padded}, htmx=True, headers=GZIP)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in response.headers
    assert "You said" in response.text
    api = client.raw()
    body = {"model": "default", "messages": [{"role": "user", "content": padded}]}
    answer = api.post("/v1/chat/completions", json=body, headers={**GZIP, "authorization": "Bearer x"})
    assert "content-encoding" not in answer.headers
    api.close()

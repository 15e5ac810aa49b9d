"""Untrusted answers render inert, and no configured secret ever reaches a page."""

from __future__ import annotations

import re

import pytest

from minigate.web.markdown import MarkdownRenderer
from tests.fakes.upstream import FakeUpstream, Reply, Status
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.blocks import UPDATE
from tests.web.helpers import CONFIG_SECRET, PASSWORD, WebClient, sse_data
from tests.web.test_auth import ADMIN_POSTS, CHAT_POSTS

PAYLOADS = {
    "script": "<script>alert(1)</script>",
    "event handler": "<img src=x onerror=alert(1)>",
    "javascript link": "[x](javascript:alert(1))",
    "javascript link, mixed case": "[x](JaVaScRiPt:alert(1))",
    "entity-encoded javascript": "[x](&#106;avascript:alert(1))",
    "data link": "[x](data:text/html;base64,PHNjcmlwdD4=)",
    "remote image": "![x](https://evil.example/pixel.png?secret=1)",
    "reference image": "![x][img]\n\n[img]: https://evil.example/p.png",
    "raw anchor": '<a href="javascript:alert(1)" onclick="alert(1)">x</a>',
    "svg": "<svg onload=alert(1)><circle/></svg>",
    "iframe": "<iframe src=https://evil.example></iframe>",
    "style": "<style>body{display:none}</style>",
    "htmx attribute": '<div hx-get="/keys" hx-trigger="load">x</div>',
    "htmx partial": '<hx-partial hx-target="body">x</hx-partial>',
    "autolink": "<javascript:alert(1)>",
}
_ACTIVE = re.compile(r"<(script|img|iframe|svg|style|div|hx-)|\son\w+=|javascript:|data:|hx-|https://evil", re.I)


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_markdown_output_is_inert(payload: str) -> None:
    html = str(MarkdownRenderer().render(payload))
    tags = re.findall(r"<[^>]*>", html)  # only the markup, not text shown to the reader
    assert not [t for t in tags if _ACTIVE.search(t)], html


def test_markdown_keeps_what_answers_need() -> None:
    html = str(MarkdownRenderer().render("# T\n\n- a\n- **b**\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n```py\nx = 1\n```\n"
                                         "[ok](https://example.com)"))  # fmt: skip
    for tag in ("<h1>", "<ul>", "<strong>", "<table>", "<td>", "<pre><code>"):
        assert tag in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">ok</a>' in html


def test_an_answer_with_markup_is_stored_as_text_and_rendered_inert(client: WebClient, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content=" ".join(PAYLOADS.values()).replace("\n", " ")))
    conversation = client.new_chat("remote")
    events = sse_data(client.send(conversation, "go"))
    page = client.get(f"/chat/{conversation}").text
    answer = page.split('<article class="msg msg-assistant"')[1].split("</article>")[0]
    for html in (answer, events[-1]):
        body = html.split('<div class="body md" hx-ignore>', 1)[1].split("</div>", 1)[0]
        assert "&lt;script&gt;" in body
        tags = re.findall(r"<[^>]*>", body)
        assert not [t for t in tags if _ACTIVE.search(t)]
    streamed = [m[3] for e in events if (m := UPDATE.fullmatch(e))]
    assert streamed
    for inner in streamed:  # the answer's blocks that changed, rendered while it streams: sanitised like the final one
        assert not [t for t in re.findall(r"<[^>]*>", inner) if _ACTIVE.search(t)]


def test_no_secret_reaches_any_page(client: WebClient, remote: FakeUpstream, web_app: InProcessGateway) -> None:
    remote.script(Status(503))
    conversation = client.new_chat("remote", system_prompt="hello")
    bodies = [client.send(conversation, "fallback please")]
    remote.script(Status(401, error={"message": "bad key"}))
    bodies.append(client.send(conversation, "again"))
    client.post("/keys", {"name": "k1"})
    for path in ["/chat", f"/chat/{conversation}", "/models", "/usage", "/usage?by=provider", "/usage.csv",
                 "/keys", "/login", "/nope"]:  # fmt: skip
        bodies.append(client.get(path).text)
    bodies.append(client.post("/models/chain", {"agent": "remote", "op": "save", "chain": ["remote/x"]}).text)
    for body in bodies:
        assert CONFIG_SECRET not in body
        assert PASSWORD not in body
        assert ADMIN_KEY not in body


def test_unknown_pages_are_html_not_stack_traces(client: WebClient) -> None:
    response = client.get("/chat/999999")
    assert response.status_code == 404 and "There is no such conversation" in response.text
    response = client.get("/static/../gateway/config.py")
    assert response.status_code == 404


@pytest.mark.parametrize(("path", "data"), [*ADMIN_POSTS, *CHAT_POSTS, ("/logout", {})])
@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example", "sec-fetch-site": "cross-site"},
        {"origin": "http://evil.example"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},  # a sibling subdomain is another site's page too
        {"origin": "null"},  # sandboxed frames, data: pages
    ],
    ids=["browser", "origin", "fetch-site", "same-site", "null"],
)
def test_cross_site_form_posts_are_refused(
    shared_admin: WebClient, path: str, data: dict[str, str], headers: dict[str, str]
) -> None:
    client = shared_admin  # refused posts change nothing, so the cases share one gateway and session
    conversation = client.new_chat("default")
    target = path.replace("/chat/1/", f"/chat/{conversation}/")
    before = client.get(f"/chat/{conversation}").text, client.get("/keys").text
    # The victim's browser sends the session cookie, and the attacker even knows the CSRF token.
    refused = client.post(target, {**data}, headers=headers)
    assert refused.status_code == 403, (target, refused.status_code)
    assert "mg_session" not in refused.headers.get("set-cookie", "")
    assert (client.get(f"/chat/{conversation}").text, client.get("/keys").text) == before
    assert client.get("/keys").status_code == 200  # still logged in: the cross-site logout did nothing

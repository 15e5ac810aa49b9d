"""Chat over HTTP, issue 15: fallback counts, titles, the settings summary, a stopped answer rendered again, and a
history that no longer fits the model's context."""

from __future__ import annotations

import re
import sqlite3

from tests.fakes.upstream import FakeUpstream, Reply, Status
from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient, sse_data

CONTEXT_ERROR = Status(
    400,
    error={
        "message": "This model's maximum context length is 2048 tokens, and the messages take 2100 of them.",
        "code": "context_length_exceeded",
    },
)


def test_a_failed_primary_is_not_a_fallback(client: WebClient, remote: FakeUpstream) -> None:
    remote.script(Status(503), Status(503), Status(503))
    conversation = client.new_chat("remote/gpt-4o-mini")  # a chain of one: nothing to fall back to
    final = sse_data(client.send(conversation, "anyone there?"))[-1]
    assert 'role="alert"' in final
    assert "fallback" not in final  # neither "1 fallback" nor "no fallback": none was taken, none answered
    assert "fallback" not in client.get(f"/chat/{conversation}").text.split('id="messages"', 1)[1]


def test_titles_are_cut_at_a_word_with_an_ellipsis(client: WebClient) -> None:
    conversation = client.new_chat()
    client.send(conversation, "Please explain the difference between concurrency and parallelism in Python programs")
    page = client.get(f"/chat/{conversation}").text
    title = re.search(r'<h1 id="conv-title">([^<]*)</h1>', page)
    assert title is not None
    assert title.group(1) == "Please explain the difference between concurrency and…"
    short = client.new_chat()
    client.send(short, "Short question")
    assert '<h1 id="conv-title">Short question</h1>' in client.get(f"/chat/{short}").text


def test_saving_settings_updates_the_summary(client: WebClient) -> None:
    conversation = client.new_chat()
    ok = client.post(
        f"/chat/{conversation}/settings",
        {"model": "slow", "temperature": "0.4", "max_tokens": "12", "system_prompt": "Be brief."},
        htmx=True,
    )
    assert ok.status_code == 200 and "Saved." in ok.text
    partial = re.search(r'<hx-partial hx-target="#settings-summary" hx-swap="innerHTML">(.*?)</hx-partial>', ok.text)
    assert partial is not None, ok.text
    assert partial.group(1) == "temperature 0.4, max 12 tokens, system prompt"
    page = client.get(f"/chat/{conversation}").text
    assert '<span class="hint" id="settings-summary">temperature 0.4, max 12 tokens, system prompt</span>' in page
    assert '<option value="slow" selected>slow</option>' in page  # the model shows in the header's picker


def test_a_stopped_answer_is_rendered_as_a_message(client: WebClient, web_app: InProcessGateway) -> None:
    conversation = client.new_chat()
    client.send(conversation, "**bold** words")
    with sqlite3.connect(web_app.db_path) as db:
        db.execute("UPDATE messages SET status = 'stopped' WHERE id = 2")
    part = client.get(f"/chat/{conversation}/messages/2")
    assert part.status_code == 200
    assert part.text.lstrip().startswith('<article class="msg msg-assistant msg-stopped" id="msg-2"')
    assert "<strong>bold</strong>" in part.text and "Stopped before the end." in part.text
    assert 'class="meta"' in part.text
    assert client.get(f"/chat/{conversation}/messages/1").status_code == 200
    assert client.get(f"/chat/{conversation}/messages/99").status_code == 404
    other = client.new_chat()
    assert client.get(f"/chat/{other}/messages/2").status_code == 404  # not that conversation's message


def test_a_history_too_long_for_the_context_drops_the_oldest_turns(
    client: WebClient, remote: FakeUpstream, web_app: InProcessGateway
) -> None:
    remote.set_default(Reply(content="a long answer that filled the context"))
    conversation = client.new_chat("remote/gpt-4o-mini", system_prompt="Be brief.")
    for question in ("first", "second", "third"):
        client.send(conversation, question)
    remote.script(CONTEXT_ERROR, CONTEXT_ERROR)
    before = len(remote.requests)
    final = sse_data(client.send(conversation, "fourth"))[-1]
    sent = [r.body for r in remote.requests[before:]]
    assert [[m["content"] for m in b["messages"] if m["role"] == "user"] for b in sent if b] == [
        ["first", "second", "third", "fourth"],
        ["third", "fourth"],  # the oldest half of the earlier turns left out
        ["fourth"],
    ]
    assert all(b and b["messages"][0] == {"role": "system", "content": "Be brief."} for b in sent)
    assert "a long answer that filled the context" in final and 'role="alert"' not in final
    assert "6 earlier messages were not sent" in final
    page = client.get(f"/chat/{conversation}").text
    assert "6 earlier messages were not sent" in page  # the page still says so after a reload
    with sqlite3.connect(web_app.db_path) as db:
        stored = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert [c for r, c in stored if r == "user"] == ["first", "second", "third", "fourth"]  # nothing deleted


def test_a_last_message_too_long_for_the_context_fails_once(client: WebClient, remote: FakeUpstream) -> None:
    remote.set_default(CONTEXT_ERROR)
    conversation = client.new_chat("remote/gpt-4o-mini")
    final = sse_data(client.send(conversation, "only this"))[-1]
    assert 'role="alert"' in final and "maximum context length" in final
    assert len(remote.requests) == 1  # nothing to leave out: no retry

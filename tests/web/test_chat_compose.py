"""The type-first chat: /chat opens on a composer, the first message creates the conversation, the header's model
picker goes with each message, and the settings panel's values reach the model."""

from __future__ import annotations

import re
import sqlite3

from tests.fakes.upstream import FakeUpstream, Reply
from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient, sse_data


def _send(client: WebClient, fields: dict[str, str]) -> list[str]:
    response = client.post("/chat/send", fields, htmx=True)
    assert response.status_code == 200, response.text
    return sse_data(response.text)


def _conversations(app: InProcessGateway) -> list[tuple[int, str, str, float | None, float | None]]:
    with sqlite3.connect(app.db_path) as db:
        return db.execute(
            "SELECT id, title, model, top_p, repetition_penalty FROM conversations ORDER BY id"
        ).fetchall()


def test_chat_opens_on_a_composer_with_the_default_agent(client: WebClient) -> None:
    page = client.get("/chat").text
    assert '<textarea id="content" name="content"' in page and "autofocus" in page
    assert '<input type="hidden" name="conversation" id="conversation-id" value="">' in page
    assert re.search(r'<select id="model" name="model" required form="composer">', page)
    assert '<option value="default" selected>default</option>' in page
    assert '<a class="button new-chat" href="/chat">New chat</a>' in page
    assert 'name="temperature" type="number"' in page and 'form="composer"' in page  # settings go with it


def test_the_first_message_creates_the_conversation(client: WebClient, web_app: InProcessGateway) -> None:
    events = _send(client, {"conversation": "", "model": "default", "content": "What is an ADR?", "top_p": "0.9"})
    [(conversation, title, model, top_p, _)] = _conversations(web_app)
    assert (title, model, top_p) == ("What is an ADR?", "default", 0.9)
    first = events[0]
    assert f'id="conversation-id" value="{conversation}"' in first  # the next message goes to it
    assert '<hx-partial hx-target="#conv-head" hx-swap="outerHTML">' in first
    assert f'href="/chat/{conversation}/export.md"' in first
    assert '<hx-partial hx-target="#settings-panel" hx-swap="outerHTML">' in first
    assert "What is an ADR?" in first  # the list in the sidebar names it
    assert "answered by" in events[-1]
    again = _send(client, {"conversation": str(conversation), "model": "default", "content": "And a PR?"})
    assert "#conv-head" not in again[0] and len(_conversations(web_app)) == 1


def test_a_message_goes_to_the_model_picked_with_it(client: WebClient, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content="from the remote"))
    conversation = client.new_chat("default")
    first = _send(client, {"conversation": str(conversation), "model": "default", "content": "hi"})
    assert 'answered by <b class="answered-by">echo/echo</b>' in first[-1]
    second = _send(client, {"conversation": str(conversation), "model": "remote", "content": "and you?"})
    assert "remote/gpt-4o-mini" in second[-1]
    body = remote.requests[-1].body
    assert body is not None and [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert '<option value="remote" selected>remote</option>' in client.get(f"/chat/{conversation}").text


def test_refusals_create_nothing(client: WebClient, web_app: InProcessGateway, remote: FakeUpstream) -> None:
    for fields, status, text in [
        ({"conversation": "", "model": "default", "content": "  "}, 400, "Write a message of 1 to 100,000"),
        ({"conversation": "", "model": "no-such-model", "content": "hi"}, 400, "unknown model 'no-such-model'"),
        ({"conversation": "", "model": "default", "content": "hi", "top_p": "2"}, 400, "top p must be a number"),
        ({"conversation": "", "model": "default", "content": "hi", "max_tokens": "1.5"}, 400, "max tokens must be"),
        ({"conversation": "", "model": "default", "content": "hi", "parent": "999"}, 400, "not in this conversation"),
        ({"conversation": "999", "model": "default", "content": "hi"}, 404, "There is no such conversation."),
        ({"conversation": "x' OR 1=1", "model": "default", "content": "hi"}, 404, "There is no such conversation."),
    ]:
        response = client.post("/chat/send", fields, htmx=True)
        assert (response.status_code, response.headers["hx-reswap"]) == (status, "none"), fields
        assert text in response.text and "Traceback" not in response.text
    assert client.post("/chat/regenerate", {"conversation": ""}, htmx=True).status_code == 400
    assert _conversations(web_app) == [] and remote.requests == []


def test_without_javascript_the_first_message_redirects_to_its_conversation(client: WebClient) -> None:
    response = client.post("/chat/send", {"conversation": "", "model": "default", "content": "plain"})
    assert response.status_code == 303
    page = client.get(response.headers["location"]).text
    assert "You said: plain" in page


def test_settings_reach_the_model_and_bad_ones_are_refused(client: WebClient, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content="ok"))
    conversation = client.new_chat("remote")
    saved = client.post(
        f"/chat/{conversation}/settings",
        {"temperature": "0.2", "top_p": "0.8", "max_tokens": "64", "repetition_penalty": "1.15", "system_prompt": "Hi"},
        htmx=True,
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    assert "temperature 0.2, top p 0.8, max 64 tokens, repetition penalty 1.15, system prompt" in saved.text
    client.send(conversation, "go")
    body = remote.requests[-1].body
    assert body is not None
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["repetition_penalty"]) == (0.2, 0.8, 64, 1.15)
    bad = client.post(f"/chat/{conversation}/settings", {"repetition_penalty": "0"}, htmx=True)
    assert bad.status_code == 422 and "repetition penalty must be a number between 0.01 and 10" in bad.text
    cleared = client.post(f"/chat/{conversation}/settings", {"top_p": "", "repetition_penalty": ""}, htmx=True)
    assert "model defaults" in cleared.text
    client.send(conversation, "again")
    body = remote.requests[-1].body
    assert body is not None and "top_p" not in body and "repetition_penalty" not in body


def test_search_finds_titles_and_words_in_messages_of_the_owner_only(
    client: WebClient, anonymous: WebClient, web_app: InProcessGateway
) -> None:
    first = client.new_chat()
    client.send(first, "Plans for the garden shed")
    second = client.new_chat()
    client.send(second, "Something else entirely; 100% about tomatoes")
    found = client.get("/chat/search", params={"q": "GARDEN"}, headers={"hx-request": "true"}).text
    assert f'href="/chat/{first}"' in found and f'href="/chat/{second}"' not in found
    by_content = client.get("/chat/search", params={"q": "tomatoes"}, headers={"hx-request": "true"}).text
    assert f'href="/chat/{second}"' in by_content and '<span class="snippet">' in by_content
    assert "100% about tomatoes" in by_content
    wildcard = client.get("/chat/search", params={"q": "%"}, headers={"hx-request": "true"}).text
    assert f'href="/chat/{second}"' in wildcard and f'href="/chat/{first}"' not in wildcard  # % is a character
    nothing = client.get("/chat/search", params={"q": "zebra"}, headers={"hx-request": "true"}).text
    assert "No conversation mentions “zebra”." in nothing
    full = client.get("/chat/search", params={"q": "garden"}).text  # without htmx: the chat page, filtered
    assert 'value="garden"' in full and f'href="/chat/{first}"' in full
    assert anonymous.get("/chat/search", params={"q": "garden"}).status_code in (303, 401)


def test_export_as_markdown_and_json(client: WebClient, anonymous: WebClient) -> None:
    conversation = client.new_chat("default", system_prompt="Be kind.", temperature="0.5")
    client.send(conversation, "Tell me `code`")
    md = client.get(f"/chat/{conversation}/export.md")
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert md.headers["content-disposition"] == f'attachment; filename="Tell-me-code-{conversation}.md"'
    assert md.text.startswith("# Tell me `code`\n\nModel: `default`\nTemperature: 0.5\n\n## System prompt\n\nBe kind.")
    assert "## You\n\nTell me `code`\n\n## Assistant (echo/echo)\n\nYou said: Tell me `code`\n" in md.text
    data = client.get(f"/chat/{conversation}/export.json").json()
    assert data["title"] == "Tell me `code`" and data["settings"]["temperature"] == 0.5
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("user", "Tell me `code`"),
        ("assistant", "You said: Tell me `code`"),
    ]
    assert client.get("/chat/999/export.md").status_code == 404
    assert anonymous.get(f"/chat/{conversation}/export.json").status_code in (303, 401)


def test_a_message_follows_the_branch_its_page_shows(client: WebClient, web_app: InProcessGateway) -> None:
    conversation = client.new_chat()
    _send(client, {"conversation": str(conversation), "model": "default", "content": "first"})
    client.post(f"/chat/{conversation}/regenerate", htmx=True)  # answer 2 of 2 is now the leaf
    with sqlite3.connect(web_app.db_path) as db:
        (first_answer,) = db.execute("SELECT MIN(id) FROM messages WHERE role = 'assistant'").fetchone()
    # A tab still showing the first answer sends after it, whatever the stored leaf is.
    _send(
        client, {"conversation": str(conversation), "model": "default", "content": "next", "parent": str(first_answer)}
    )
    with sqlite3.connect(web_app.db_path) as db:
        (parent,) = db.execute("SELECT parent_id FROM messages WHERE content = 'next'").fetchone()
    assert parent == first_answer
    other = client.new_chat()
    refused = client.post(
        "/chat/send",
        {"conversation": str(other), "model": "default", "content": "x", "parent": str(first_answer)},
        htmx=True,
    )
    assert refused.status_code == 400 and "not in this conversation" in refused.text

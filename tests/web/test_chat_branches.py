"""Branches over HTTP (issue 15): Regenerate keeps the old answers as versions, an edited message starts a branch,
flipping versions is stored; the model is sent only the branch shown."""

from __future__ import annotations

import re
import sqlite3

from tests.fakes.upstream import FakeUpstream, Reply
from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient, sse_data


def _sent(remote: FakeUpstream) -> list[tuple[str, str]]:
    body = remote.requests[-1].body
    assert body is not None
    return [(m["role"], m["content"]) for m in body["messages"]]


def _ids(web_app: InProcessGateway, role: str) -> list[int]:
    with sqlite3.connect(web_app.db_path) as db:
        return [row[0] for row in db.execute("SELECT id FROM messages WHERE role = ? ORDER BY id", (role,))]


def _regenerate(client: WebClient, conversation: int) -> list[str]:
    response = client.post(f"/chat/{conversation}/regenerate", htmx=True)
    assert response.status_code == 200, response.text
    return sse_data(response.text)


def test_regenerated_answers_are_kept_as_versions(
    client: WebClient, remote: FakeUpstream, web_app: InProcessGateway
) -> None:
    remote.script(Reply(content="answer one"), Reply(content="answer two"), Reply(content="answer three"))
    conversation = client.new_chat("remote")
    client.send(conversation, "hello")
    _regenerate(client, conversation)
    final = _regenerate(client, conversation)[-1]
    assert "answer three" in final and '<span class="version">3 / 3</span>' in final
    assert _sent(remote) == [("user", "hello")]  # no earlier answer is sent with a regenerate
    first, second, _third = _ids(web_app, "assistant")
    page = client.get(f"/chat/{conversation}").text
    assert "answer three" in page and "answer one" not in page and "3 / 3" in page
    assert f'hx-post="/chat/{conversation}/messages/{second}/show"' in page  # Previous goes to the second

    flipped = client.post(f"/chat/{conversation}/messages/{first}/show", htmx=True)
    assert flipped.status_code == 200 and "answer one" in flipped.text and "1 / 3" in flipped.text
    assert "<html" not in flipped.text  # the messages only, for #messages
    assert '<hx-partial hx-target="#context"' in flipped.text  # and how full the context is on this branch
    page = client.get(f"/chat/{conversation}").text  # kept across a reload
    assert "answer one" in page and "answer three" not in page and "1 / 3" in page

    client.send(conversation, "and then?")  # follows the version shown
    assert _sent(remote) == [("user", "hello"), ("assistant", "answer one"), ("user", "and then?")]


def test_editing_a_message_starts_a_branch(client: WebClient, remote: FakeUpstream, web_app: InProcessGateway) -> None:
    remote.script(*(Reply(content=f"reply {n}") for n in range(1, 5)))
    conversation = client.new_chat("remote")
    client.send(conversation, "first question")
    client.send(conversation, "second question")
    q1, q2 = _ids(web_app, "user")

    form = client.get(f"/chat/{conversation}/messages/{q1}/edit", headers={"hx-request": "true"})
    assert form.status_code == 200 and "<html" not in form.text
    assert f'name="content-{q1}" form="branch-edit"' in form.text and "first question</textarea>" in form.text
    page = client.get(f"/chat/{conversation}").text
    assert re.search(r'<form id="branch-edit"[^>]*hx-post="/chat/edit"', page)  # outside #messages
    assert page.index('id="branch-edit"') > page.index('id="messages"')

    response = client.post("/chat/edit", {"message": str(q1), f"content-{q1}": "first, edited"}, htmx=True)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_data(response.text)
    assert "first, edited" in events[0] and "second question" not in events[0]
    assert "reply 3" in events[-1]
    assert _sent(remote) == [("user", "first, edited")]  # the new branch only
    page = client.get(f"/chat/{conversation}").text
    assert "first, edited" in page and "reply 3" in page and "2 / 2" in page and "second question" not in page

    shown = client.post(f"/chat/{conversation}/messages/{q1}/show", htmx=True).text  # back: the old branch whole
    assert all(text in shown for text in ("first question", "reply 1", "second question", "reply 2", "1 / 2"))
    edited = _ids(web_app, "user")[-1]
    assert client.post(f"/chat/{conversation}/messages/{edited}/show", htmx=True).status_code == 200

    client.send(conversation, "follow-up")
    assert _sent(remote) == [("user", "first, edited"), ("assistant", "reply 3"), ("user", "follow-up")]
    assert q2 in _ids(web_app, "user")  # nothing was deleted


def test_branches_without_javascript(client: WebClient) -> None:
    conversation = client.new_chat()
    client.send(conversation, "plain")
    assert client.post(f"/chat/{conversation}/regenerate").status_code == 303
    page = client.get(f"/chat/{conversation}").text
    assert page.count("<p>You said: plain</p>") == 1 and "2 / 2" in page
    previous = re.search(rf'formaction="(/chat/{conversation}/messages/\d+/show)"', page)
    assert previous is not None
    moved = client.post(previous.group(1))
    assert moved.status_code == 303 and moved.headers["location"].startswith(f"/chat/{conversation}")
    assert "1 / 2" in client.get(f"/chat/{conversation}").text

    edit_link = re.search(rf'href="(/chat/{conversation}/messages/(\d+)/edit)"', page)
    assert edit_link is not None
    edit_page = client.get(edit_link.group(1))
    assert edit_page.status_code == 200 and '<form id="branch-edit" method="post"' in edit_page.text
    message = edit_link.group(2)
    sent = client.post("/chat/edit", {"message": message, f"content-{message}": "plain, edited"})
    assert sent.status_code == 303
    page = client.get(f"/chat/{conversation}").text
    assert "<p>You said: plain, edited</p>" in page and "<p>You said: plain</p>" not in page


def test_edits_and_flips_are_checked(client: WebClient, web_app: InProcessGateway) -> None:
    conversation = client.new_chat()
    other = client.new_chat()
    client.send(conversation, "mine")
    client.send(other, "elsewhere")
    question, _ = _ids(web_app, "user")
    answer = _ids(web_app, "assistant")[0]
    path = "/chat/edit"
    assert client.post(path, {"message": str(answer), f"content-{answer}": "x"}, htmx=True).status_code == 404
    with sqlite3.connect(web_app.db_path) as db:  # someone else's conversation
        db.execute("UPDATE conversations SET owner = 'guest:someone' WHERE id = ?", (other,))
    other_question = _ids(web_app, "user")[1]
    theirs = {"message": str(other_question), f"content-{other_question}": "x"}
    assert client.post(path, theirs, htmx=True).status_code == 404
    assert client.post(path, {"message": "99999", "content-99999": "x"}, htmx=True).status_code == 404
    assert client.post(path, {"message": str(question), f"content-{question}": " "}, htmx=True).status_code == 400
    assert client.post(path, {"message": "nope"}, htmx=True).status_code == 400
    assert client.get(f"/chat/{other}/messages/{question}/edit").status_code == 404
    assert client.get(f"/chat/{conversation}/messages/{answer}/edit").status_code == 404
    assert client.post(f"/chat/{other}/messages/{question}/show", htmx=True).status_code == 404
    assert client.post(f"/chat/{conversation}/messages/{question}/show", csrf=False).status_code == 403
    assert "mine" in client.get(f"/chat/{conversation}").text

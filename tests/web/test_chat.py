"""Chat over HTTP: answers stream through the router (usage rows, fallbacks), conversations persist."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

from tests.fakes.upstream import FakeUpstream, Reply, Status
from tests.gateway_server import GatewayServer
from tests.inprocess import InProcessGateway
from tests.web.blocks import bodies
from tests.web.helpers import WebClient, sse_data


def test_an_answer_streams_as_htmx_partials(client: WebClient, web_app: InProcessGateway) -> None:
    conversation = client.new_chat("default", system_prompt="Be brief.", temperature="0.3", max_tokens="50")
    events = sse_data(client.send(conversation, "hello there"))
    assert 'id="msg-1"' in events[0] and "hello there" in events[0]  # the conversation, the empty answer
    # The answer so far, rendered as Markdown into its body: the first piece at once, then at most every 80 ms.
    renders = bodies(events, 2)  # each event replaces the body's blocks that changed (tests/web/blocks.py)
    assert renders[0] == "<p>You</p>\n"
    assert all(r.startswith("<p>You") for r in renders)
    assert 'hx-target="#msg-2" hx-swap="outerHTML"' in events[-1]
    assert 'answered by <b class="answered-by">echo/echo</b>' in events[-1]
    row = web_app.rows()[-1]
    assert (row["agent"], row["provider"], row["status"], row["streamed"]) == ("defaults", "echo", 200, 1)
    with sqlite3.connect(web_app.db_path) as db:
        stored = db.execute(
            "SELECT content, status, request_id, completion_tokens FROM messages WHERE id = 2"
        ).fetchone()
    assert stored == ("You said: hello there", "ok", row["request_id"], 4)


def test_the_request_carries_the_conversation_settings(client: WebClient, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content="fine"))
    conversation = client.new_chat("remote", system_prompt="You are terse.", temperature="0.3", max_tokens="50")
    client.send(conversation, "first")
    client.send(conversation, "second")
    body = remote.requests[-1].body
    assert body is not None
    assert body["temperature"] == 0.3 and body["max_tokens"] == 50
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "You are terse."


def test_fallback_hops_are_stored_with_the_answer(client: WebClient, remote: FakeUpstream) -> None:
    remote.script(Status(503))
    conversation = client.new_chat("remote")
    final = sse_data(client.send(conversation, "anyone?"))[-1]
    assert "echo/echo" in final and "1 fallback" in final and "remote/gpt-4o-mini: HTTP 503" in final


def test_a_failing_chain_shows_the_error(client: WebClient, remote: FakeUpstream, web_app: InProcessGateway) -> None:
    conversation = client.new_chat("remote/gpt-4o-mini")
    remote.script(Status(400, error={"message": "bad request from upstream"}))
    final = sse_data(client.send(conversation, "fail please"))[-1]
    assert 'role="alert"' in final and "bad request from upstream" in final
    assert web_app.rows()[-1]["status"] == 400


def test_no_javascript_form_posts_still_work(client: WebClient) -> None:
    conversation = client.new_chat()
    response = client.post(f"/chat/{conversation}/send", {"content": "plain form"})
    assert response.status_code == 303 and response.headers["location"] == f"/chat/{conversation}"
    assert "You said: plain form" in client.get(f"/chat/{conversation}").text
    assert client.post(f"/chat/{conversation}/regenerate").status_code == 303
    page = client.get(f"/chat/{conversation}").text
    assert page.count("<p>You said: plain form</p>") == 1  # one answer shown (its source is also in a <template>)


def test_disconnecting_stops_the_answer_and_keeps_the_text(server_client: WebClient, web_server: GatewayServer) -> None:
    conversation = server_client.new_chat("slow")
    assert server_client.csrf is not None
    words = " ".join(f"w{i}" for i in range(40))
    # A real socket: closing it mid-answer is the disconnect under test.
    with (
        server_client.raw(cookies=server_client.http.cookies) as raw,
        raw.stream(
            "POST",
            f"/chat/{conversation}/send",
            data={"content": words, "_csrf": server_client.csrf},
            headers={"hx-request": "true"},
        ) as response,
    ):
        received = ""
        for chunk in response.iter_text():
            received += chunk
            if received.count('-text" hx-swap="blocks keep:') >= 3:  # three renders of the answer so far
                break  # leaving the block closes the connection, like the Stop button
    rows = web_server.wait_rows(1)
    assert rows[-1]["status"] == 499
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with sqlite3.connect(web_server.db_path) as db:
            status, content = db.execute("SELECT status, content FROM messages WHERE role = 'assistant'").fetchone()
        if status == "stopped":
            break
        time.sleep(0.05)
    assert status == "stopped" and content.startswith("You said:") and "w39" not in content
    assert "Stopped before the end." in server_client.get(f"/chat/{conversation}").text


def test_rename_settings_and_delete(client: WebClient) -> None:
    conversation = client.new_chat()
    assert client.post(f"/chat/{conversation}/rename", {"title": "My <b>title</b>"}).status_code == 303
    page = client.get(f"/chat/{conversation}").text
    assert "My &lt;b&gt;title&lt;/b&gt;" in page and "My <b>title" not in page
    bad = client.post(f"/chat/{conversation}/settings", {"model": "default", "temperature": "7"}, htmx=True)
    assert bad.status_code == 422 and "temperature must be a number between 0 and 2" in bad.text
    unknown = client.post(f"/chat/{conversation}/settings", {"model": "nope"}, htmx=True)
    assert unknown.status_code == 422 and "unknown model" in unknown.text
    ok = client.post(f"/chat/{conversation}/settings", {"model": "slow", "max_tokens": "12"}, htmx=True)
    assert ok.status_code == 200 and "Saved." in ok.text
    assert client.post(f"/chat/{conversation}/delete").status_code == 303
    assert client.get(f"/chat/{conversation}").status_code == 404


def test_conversations_are_listed_newest_first(client: WebClient) -> None:
    first = client.new_chat()
    client.send(first, "older one")
    second = client.new_chat()
    client.send(second, "newer one")
    page = client.get("/chat").text
    assert page.index("newer one") < page.index("older one")


def test_empty_and_huge_messages_are_refused(client: WebClient) -> None:
    conversation = client.new_chat()
    empty = client.post(f"/chat/{conversation}/send", {"content": "  "}, htmx=True)
    assert empty.status_code == 400 and empty.headers["hx-reswap"] == "none"
    huge = client.post(f"/chat/{conversation}/send", {"content": "x" * 100_001}, htmx=True)
    assert huge.status_code == 400


def test_two_answers_at_once(client: WebClient) -> None:
    conversations = [client.new_chat(), client.new_chat()]
    answers: list[str] = []

    def ask(conversation: int) -> None:
        answers.append(client.send(conversation, f"parallel {conversation}"))

    threads = [threading.Thread(target=ask, args=(c,)) for c in conversations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted("You said: parallel" in a for a in answers) == [True, True]


def test_a_reload_just_after_stop_shows_the_stopped_answer(client: WebClient, web_app: InProcessGateway) -> None:
    """The page loads while the stopped answer is still being stored (its usage row is in, the message is not yet):
    the page waits for it, so it shows "Stopped before the end." and the footer, not an answer streaming forever."""
    conversation = client.new_chat("default")
    client.send(conversation, "hello there")

    def set_status(status: str) -> None:
        with sqlite3.connect(web_app.db_path) as db:
            db.execute("UPDATE messages SET status = ? WHERE id = 2", (status,))

    set_status("streaming")  # as between the usage row and the message
    later: list[asyncio.Task[None]] = []

    async def stop_later(_: object) -> None:
        async def mark() -> None:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(set_status, "stopped")

        later.append(asyncio.get_running_loop().create_task(mark()))

    web_app.run(stop_later)  # on the app's loop, which keeps running while the page is asked for
    page = client.get(f"/chat/{conversation}").text
    assert later and later[0].done()
    assert "Stopped before the end." in page and 'class="meta"' in page
    assert 'aria-busy="true"' not in page

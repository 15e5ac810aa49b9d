"""One person cannot read or change another's conversations, keys, usage or stored responses through any page or
API: every route that names one of alice's things is tried by bob (his session, or his key), and alice's things
must come out as they were, with nothing of hers in bob's answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.inprocess import InProcessGateway
from tests.web.helpers import CONFIG_SECRET, PASSWORD, WebClient, web_config
from tests.web.people import add_person, key_ids, new_key, person
from tests.web.test_chat_images import PNG, send

SECRET = "ALICE-SECRET-7731"  # in alice's message, title, answer and stored response


@dataclass
class World:
    app: InProcessGateway
    admin: WebClient
    alice: WebClient
    bob: WebClient
    alice_id: int
    bob_id: int
    ids: dict[str, Any]  # conversation, user message, answer, image, key, response
    alice_token: str
    bob_token: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with FakeUpstream("remote", api_key=CONFIG_SECRET) as remote, pytest.MonkeyPatch.context() as env:
        env.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
        env.delenv("MINIGATE_CHAT_PUBLIC", raising=False)
        remote.set_default(Reply(content=f"A cat, {SECRET}."))
        with InProcessGateway(web_config(remote), tmp_path_factory.mktemp("iso")) as app:
            admin = WebClient(app)
            assert admin.login().status_code == 303
            alice_id = add_person(admin, "alice", "alice-password")
            bob_id = add_person(admin, "bob", "bob-password")
            alice, bob = person(app, "alice", "alice-password"), person(app, "bob", "bob-password")
            conversation = alice.new_chat(model="remote")
            answer = send(alice, conversation, f"What is this? {SECRET}", [("cat.png", PNG, "image/png")])
            assert answer.status_code == 200, answer.text
            image = int(re.findall(rf'<img src="/chat/{conversation}/images/(\d+)"', answer.text)[0])
            page = alice.get(f"/chat/{conversation}").text
            message, reply = (int(m) for m in re.findall(r'id="msg-(\d+)"', page)[:2])
            key, alice_token = new_key(alice, "alice laptop")
            _, bob_token = new_key(bob, "bob laptop")
            with app.new_http() as http:
                made = http.post(
                    "/v1/responses",
                    json={"model": "default", "input": f"remember {SECRET}"},
                    headers={"authorization": f"Bearer {alice_token}"},
                )
            assert made.status_code == 200, made.text
            ids = {"c": conversation, "m": message, "a": reply, "i": image, "k": key, "r": made.json()["id"]}
            yield World(app, admin, alice, bob, alice_id, bob_id, ids, alice_token, bob_token)
            for web in (admin, alice, bob):
                web.close()


# (method, path, form or JSON body, the statuses bob may get). Paths name alice's things: {c} conversation, {m} her
# message, {a} the answer, {i} the image, {k} her key, {r} her stored response, {u} her person id.
WEB: list[tuple[str, str, dict[str, str], set[int]]] = [
    ("GET", "/chat", {}, {200}),
    ("GET", "/chat/{c}", {}, {404}),
    ("GET", "/chat/{c}/messages/{m}", {}, {404}),
    ("GET", "/chat/{c}/messages/{a}", {}, {404}),
    ("GET", "/chat/{c}/messages/{m}/edit", {}, {404}),
    ("GET", "/chat/{c}/export.md", {}, {404}),
    ("GET", "/chat/{c}/export.json", {}, {404}),
    ("GET", "/chat/{c}/images/{i}", {}, {404}),
    ("GET", "/chat/search?q=What+is+this", {}, {200}),  # words of alice's message (her secret would be echoed)
    ("GET", "/chat/search?q=cat", {}, {200}),
    ("POST", "/chat/{c}/send", {"content": "mine now"}, {404}),
    ("POST", "/chat/send", {"conversation": "{c}", "content": "mine now"}, {404}),
    ("POST", "/chat/send", {"conversation": "{c}", "content": "mine now", "parent": "{a}"}, {404}),
    ("POST", "/chat/{c}/regenerate", {}, {404}),
    ("POST", "/chat/regenerate", {"conversation": "{c}"}, {404}),
    ("POST", "/chat/{c}/settings", {"model": "default", "system_prompt": "obey bob"}, {404}),
    ("POST", "/chat/{c}/rename", {"title": "bob's now"}, {404}),
    ("POST", "/chat/{c}/delete", {}, {303}),  # answers as for any id; the check after says nothing went
    ("POST", "/chat/edit", {"message": "{m}", "content-{m}": "changed by bob"}, {404}),
    ("POST", "/chat/{c}/messages/{m}/show", {}, {404}),
    ("GET", "/keys", {}, {200}),
    ("GET", "/keys/{k}/revoke", {}, {404}),
    ("POST", "/keys/{k}/revoke", {}, {404}),
    ("POST", "/keys/{k}/policy", {"rpm": "1"}, {403}),  # nor her limits (a person cannot change even their own)
    ("GET", "/usage", {}, {200}),
    ("GET", "/usage?user={u}", {}, {200}),
    ("GET", "/usage?key={k}&by=key", {}, {200}),
    ("GET", "/usage?by=person", {}, {200}),
    ("GET", "/usage.csv", {}, {200}),
    ("GET", "/usage.csv?user={u}&key={k}", {}, {200}),
    ("GET", "/users", {}, {303}),
    ("POST", "/users/{u}/disable", {}, {403}),
    ("POST", "/users/{u}/password", {"password": "bob-knows-it"}, {403}),
    ("POST", "/users/{u}/policy", {"daily_tokens": "0"}, {403}),
    ("POST", "/users", {"name": "alice2", "password": "whatever-pw", "admin": "on"}, {403}),
    ("GET", "/models", {}, {303}),
]
API: list[tuple[str, str, dict[str, Any] | None, set[int]]] = [
    ("GET", "/v1/responses/{r}", None, {404}),
    ("GET", "/v1/responses/{r}/input_items", None, {404}),
    ("DELETE", "/v1/responses/{r}", None, {404}),
    ("POST", "/v1/responses", {"model": "default", "input": "go on", "previous_response_id": "{r}"}, {404}),
    ("GET", "/admin/api/models", None, {403}),
    ("GET", "/admin/api/jobs", None, {403}),
    ("GET", "/admin/api/keys", None, {403}),
    ("PATCH", "/admin/api/keys/{k}", {"policy": {"rpm": 1}}, {403}),
    ("DELETE", "/admin/api/keys/{k}", None, {403}),
    ("GET", "/admin/api/users", None, {403}),
    ("GET", "/admin/api/users/{u}", None, {403}),
    ("PATCH", "/admin/api/users/{u}", {"password": "bob-knows-it", "disabled": True}, {403}),
    ("DELETE", "/admin/api/users/{u}", None, {403}),
    ("POST", "/admin/api/users", {"name": "alice2", "password": "whatever-pw", "admin": True}, {403}),
    ("GET", "/admin/api/usage?user={u}", None, {403}),
    ("GET", "/admin/api/usage/summary?group_by=person", None, {403}),
    ("GET", "/admin/api/prices", None, {403}),
]


def _fill(text: str, world: World) -> str:
    return text.format(**world.ids, u=world.alice_id)


def _intact(world: World) -> None:
    """Alice's conversation, messages, image, key and stored response are all as they were."""
    ids, alice = world.ids, world.alice
    page = alice.get(f"/chat/{ids['c']}")
    assert page.status_code == 200 and SECRET in page.text and "bob" not in page.text and "obey" not in page.text
    assert "changed by bob" not in page.text and "mine now" not in page.text
    assert alice.get(f"/chat/{ids['c']}/images/{ids['i']}").content == PNG
    assert ids["k"] in key_ids(alice)
    with world.app.new_http() as http:
        stored = http.get(f"/v1/responses/{ids['r']}", headers={"authorization": f"Bearer {world.alice_token}"})
    assert stored.status_code == 200 and stored.json()["id"] == ids["r"]


@pytest.mark.parametrize(("method", "path", "data", "allowed"), WEB, ids=[f"{m} {p}" for m, p, _, _ in WEB])
def test_bobs_session_reaches_nothing_of_alices(
    world: World, method: str, path: str, data: dict[str, str], allowed: set[int]
) -> None:
    bob = world.bob
    url = _fill(path, world)
    if method == "GET":
        response = bob.get(url)
    else:
        form = {_fill(k, world): _fill(v, world) for k, v in data.items()}
        response = bob.post(url, form, htmx="send" in url or "regenerate" in url or "edit" in url)
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    assert SECRET not in response.text
    assert "alice laptop" not in response.text and "alice" not in response.text.lower().replace("alice2", "")
    _only_bobs_usage(world, url, response.text)
    _intact(world)


def _only_bobs_usage(world: World, url: str, text: str) -> None:
    """The usage page counts only bob's requests (none with alice's key); the CSV has only bob's rows."""
    rows = world.app.rows()
    assert any(row["user_id"] == world.alice_id for row in rows)  # there is something of hers to leak
    mine = [row for row in rows if row["user_id"] == world.bob_id]
    if url.startswith("/usage?") or url == "/usage":
        shown = re.search(r'<dd id="total-requests">([\d,]+)</dd>', text)
        assert shown is not None
        expected = 0 if f"key={world.ids['k']}" in url else len(mine)
        assert int(shown.group(1).replace(",", "")) == expected
    if url.startswith("/usage.csv"):
        lines = text.strip().splitlines()
        column = lines[0].split(",").index("user_id")
        assert all(line.split(",")[column] == str(world.bob_id) for line in lines[1:]), lines


@pytest.mark.parametrize(("method", "path", "body", "allowed"), API, ids=[f"{m} {p}" for m, p, _, _ in API])
def test_bobs_key_reaches_nothing_of_alices(
    world: World, method: str, path: str, body: dict[str, Any] | None, allowed: set[int]
) -> None:
    sent = None if body is None else {k: _fill(v, world) if isinstance(v, str) else v for k, v in body.items()}
    with world.app.new_http() as http:
        response: httpx.Response = http.request(
            method, _fill(path, world), json=sent, headers={"authorization": f"Bearer {world.bob_token}"}
        )
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    assert SECRET not in response.text
    _intact(world)


def test_the_admin_sees_everyones_keys_and_usage(world: World) -> None:
    keys = world.admin.get("/keys").text
    assert "alice laptop" in keys and "bob laptop" in keys
    usage = world.admin.get(f"/usage?user={world.alice_id}").text
    assert '<dd id="total-requests">0</dd>' not in usage
    assert "alice" in world.admin.get("/usage?by=person").text


def test_a_persons_keys_share_their_stored_responses(world: World) -> None:
    _, phone = new_key(world.alice, "alice phone")
    response_id = world.ids["r"]
    with world.app.new_http() as http:
        mine = http.get(f"/v1/responses/{response_id}/input_items", headers={"authorization": f"Bearer {phone}"})
        bobs = http.get(f"/v1/responses/{response_id}", headers={"authorization": f"Bearer {world.bob_token}"})
    assert mine.status_code == 200 and SECRET in mine.text  # any key of hers reaches it
    assert bobs.status_code == 404

"""People in the web UI: the admin adds them on /users, each logs in with a name and a password, has their own
keys and usage; disabling someone ends their session and stops their keys at once."""

from __future__ import annotations

import openai
import pytest

from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient
from tests.web.people import add_person, key_ids, login_form, new_key, person


def test_a_person_logs_in_with_a_name_and_sees_their_own_pages(web_app: InProcessGateway, client: WebClient) -> None:
    add_person(client, "alice", "alice-password")
    alice = person(web_app, "alice", "alice-password")
    chat = alice.get("/chat").text
    assert '<span class="who" title="Logged in">alice</span>' in chat
    assert 'href="/keys"' in chat and 'href="/usage"' in chat
    assert 'href="/models"' not in chat and 'href="/users"' not in chat
    for path in ("/chat", "/keys", "/usage", "/usage.csv"):
        assert alice.get(path).status_code == 200, path
    for path in ("/models", "/users"):  # admin pages
        assert alice.get(path).status_code == 303, path
    posts = [
        ("/users", {"name": "mallory", "password": "mallory-pw"}),
        ("/users/1/disable", {}),
        ("/users/1/password", {"password": "taken-over"}),
        ("/models/chain", {"agent": "defaults"}),
    ]
    for path, data in posts:
        assert alice.post(path, data).status_code == 403, path
    assert "mallory" not in client.get("/users").text
    assert '<span class="who" title="Logged in">admin</span>' in client.get("/chat").text
    alice.close()


def test_wrong_names_and_passwords_are_refused_and_throttled(web_app: InProcessGateway, client: WebClient) -> None:
    add_person(client, "alice", "alice-password")
    web = WebClient(web_app)
    assert login_form(web, "alice", "wrong-password").status_code == 401
    assert login_form(web, "nobody", "alice-password").status_code == 401
    assert login_form(web, "alice", "").status_code == 401
    assert login_form(web, "ALICE", "alice-password").status_code == 401
    for _ in range(6):  # ten failures in all: the throttle's limit
        assert login_form(web, "alice", "wrong-password").status_code == 401
    refused = login_form(web, "alice", "alice-password")  # the right password, after the tenth failure
    assert refused.status_code == 401 and "Too many failed attempts" in refused.text
    web.close()


def test_the_admin_password_and_keys_still_log_in_without_a_name(web_app: InProcessGateway, client: WebClient) -> None:
    add_person(client, "alice", "alice-password")
    web = WebClient(web_app)
    assert web.login().status_code == 303  # the admin password, no name
    assert web.get("/users").status_code == 200
    web.close()
    named = WebClient(web_app)  # the admin password under a person's name is that person's login, and wrong
    assert login_form(named, "alice", "web-admin-password-42").status_code == 401
    named.close()


def test_an_admin_person_manages_everyone(web_app: InProcessGateway, client: WebClient) -> None:
    root_id = add_person(client, "root", "root-password", is_admin=True)
    bob_id = add_person(client, "bob", "bob-password")
    root = person(web_app, "root", "root-password")
    assert root.get("/users").status_code == 200 and root.get("/models").status_code == 200
    bob = person(web_app, "bob", "bob-password")
    key_id, _ = new_key(bob, "bob laptop")
    page = root.get("/keys").text
    assert f'<tr id="key-{key_id}">' in page and '<td data-label="Whose">bob</td>' in page
    assert f'<option value="{root_id}" selected>root</option>' in page  # an admin's new key is theirs by default
    assert root.post(f"/users/{root_id}/disable").status_code == 422  # not oneself
    assert root.post(f"/users/{bob_id}/password", {"password": "short"}).status_code == 422
    assert root.post(f"/users/{bob_id}/password", {"password": "bob-new-password"}).status_code == 200
    assert bob.get("/chat").status_code == 303  # a new password ends the old sessions
    assert root.get("/users").status_code == 200  # and only that person's
    assert login_form(WebClient(web_app), "bob", "bob-password").status_code == 401
    person(web_app, "bob", "bob-new-password").close()
    bob.close()
    root.close()


def test_disabling_a_person_ends_their_session_and_keys_at_once(web_app: InProcessGateway, client: WebClient) -> None:
    bob_id = add_person(client, "bob", "bob-password")
    bob = person(web_app, "bob", "bob-password")
    _, token = new_key(bob, "bob laptop")
    sdk = web_app.client(key=token)
    assert sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}]).choices
    assert client.post(f"/users/{bob_id}/disable").status_code == 200
    assert bob.get("/chat").status_code == 303  # the session is over
    with pytest.raises(openai.AuthenticationError):  # within the key cache's time: this process forgets at once
        sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert login_form(WebClient(web_app), "bob", "bob-password").status_code == 401
    assert client.post(f"/users/{bob_id}/disable").status_code == 404  # already
    assert client.post(f"/users/{bob_id}/enable").status_code == 200
    assert sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}]).choices
    bob.close()


def test_people_make_their_own_keys_and_usage_is_theirs(web_app: InProcessGateway, client: WebClient) -> None:
    alice_id = add_person(client, "alice", "alice-password")
    add_person(client, "bob", "bob-password")
    alice, bob = person(web_app, "alice", "alice-password"), person(web_app, "bob", "bob-password")
    refused = alice.post("/keys", {"name": "sneaky", "admin": "on"})
    assert refused.status_code == 403 and "Only an admin" in refused.text
    a_key, a_token = new_key(alice, "alice laptop", user="999")  # a person cannot give a key to someone else
    assert key_ids(alice) == [a_key] and key_ids(bob) == []
    sdk = web_app.client(key=a_token)
    sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "from alice's key"}])
    conversation = alice.new_chat()
    alice.send(conversation, "from alice's chat")  # no key: the session's person
    rows = web_app.wait_rows(2)
    assert [(r["key_id"], r["user_id"]) for r in rows] == [(a_key, alice_id), (None, alice_id)]
    assert '<dd id="total-requests">2</dd>' in alice.get("/usage").text
    assert '<dd id="total-requests">0</dd>' in bob.get("/usage").text
    assert '<dd id="total-requests">0</dd>' in bob.get(f"/usage?user={alice_id}").text  # asking does not help
    csv = bob.get(f"/usage.csv?user={alice_id}").text
    assert csv.count("\n") == 1  # the header only
    assert '<dd id="total-requests">2</dd>' in client.get(f"/usage?user={alice_id}").text  # the admin sees all
    assert '<dd id="total-requests">0</dd>' in client.get("/usage?user=none").text
    by_person = client.get("/usage?by=person").text
    assert '<th scope="row" data-label="Person">alice</th>' in by_person
    assert len(client.get(f"/usage.csv?user={alice_id}").text.strip().splitlines()) == 3
    alice.close()
    bob.close()


def test_a_person_logs_in_by_key_only_as_an_admin_key(web_app: InProcessGateway, client: WebClient) -> None:
    add_person(client, "alice", "alice-password")
    alice = person(web_app, "alice", "alice-password")
    _, token = new_key(alice, "alice laptop")
    assert WebClient(web_app).login(token).status_code == 401  # a person's key is no admin login
    with web_app.new_http() as raw:
        answer = raw.get("/admin/api/models", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 403
    alice.close()

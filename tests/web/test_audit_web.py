"""The audit log through the web UI, in process: what an admin and a person change on /users and /keys is recorded
by who they are (never a password or a key), and only admins see /audit."""

from __future__ import annotations

import json
import re
from typing import Any

from minigate.gateway.runtime.gateway import Gateway
from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient
from tests.web.people import add_person, new_key, person


def entries(app: InProcessGateway) -> list[dict[str, Any]]:
    """Every audit row, newest first, once the queued ones are stored."""

    async def read(gateway: Gateway) -> list[dict[str, Any]]:
        assert gateway.audit is not None
        await gateway.audit.flush()
        return await gateway.audit.page(limit=500)

    return app.run(read)


def test_web_actions_are_recorded_by_who_made_them(web_app: InProcessGateway, client: WebClient) -> None:
    alice_id = add_person(client, "alice", "alice-password-1")
    alice = person(web_app, "alice", "alice-password-1")
    _, secret = new_key(alice, "laptop")
    assert client.post(f"/users/{alice_id}/password", {"password": "alice-password-2"}).status_code == 200
    assert client.post(f"/users/{alice_id}/disable").status_code == 200
    assert client.post("/users/999/enable").status_code == 404
    assert client.post("/users", {"name": "bob", "password": "bob-password-1"}, csrf=False).status_code == 403
    rows = entries(web_app)
    assert [(r["via"], r["actor"], r["actor_kind"], r["action"], r["target"], r["status"]) for r in rows] == [
        ("web", "admin", "admin", "POST /users/{user_id}/enable", "user_id=999", 404),
        ("web", "admin", "admin", "POST /users/{user_id}/disable", f"user_id={alice_id}", 200),
        ("web", "admin", "admin", "POST /users/{user_id}/password", f"user_id={alice_id}", 200),
        ("web", "alice", "user", "POST /keys", "name=laptop", 200),
        ("web", "admin", "admin", "POST /users", "name=alice", 200),
    ]  # the post without the CSRF token did nothing, and is not there
    assert rows[4]["details"] == {"name": "alice", "password": "[hidden]"}
    assert rows[3]["user_id"] == alice_id and rows[3]["details"] == {"name": "laptop"}
    stored = json.dumps([r["details"] for r in rows]) + json.dumps([r["target"] for r in rows])
    for secret_value in ("alice-password-1", "alice-password-2", secret):
        assert secret_value not in stored
    alice.close()


def test_only_admins_see_the_audit_page(web_app: InProcessGateway, client: WebClient) -> None:
    add_person(client, "alice", "alice-password-1")
    add_person(client, "bob", "bob-password-1")
    entries(web_app)  # stored
    page = client.get("/audit")
    assert page.status_code == 200
    assert 'href="/audit" aria-current="page"' in page.text
    assert page.text.count('<tr id="audit-') == 2 and "name=bob" in page.text
    assert "password=[hidden]" in page.text and "bob-password-1" not in page.text
    filtered = client.get("/audit", params={"action": "/users/"})
    assert filtered.status_code == 200 and '<tr id="audit-' not in filtered.text
    assert client.get("/audit", params={"actor": "admin"}).text.count('<tr id="audit-') == 2
    alice = person(web_app, "alice", "alice-password-1")
    assert alice.get("/audit").status_code == 303  # to the login page, like every admin page
    assert 'href="/audit"' not in alice.get("/chat").text
    alice.close()


def test_the_audit_page_pages(web_app: InProcessGateway, client: WebClient) -> None:
    for n in range(51):
        assert client.post("/users", {"name": f"p{n}", "password": "x"}).status_code == 422  # too short: still recorded
    entries(web_app)
    first = client.get("/audit")
    assert first.text.count('<tr id="audit-') == 50
    older = re.search(r'href="(/audit\?[^"]*before=\d+)"', first.text)
    assert older is not None
    assert client.get(older.group(1).replace("&amp;", "&")).text.count('<tr id="audit-') == 1


def test_model_and_chain_actions_are_recorded(web_app: InProcessGateway, client: WebClient) -> None:
    assert client.post("/models/action", {"provider": "echo", "model": "echo", "action": "unload"}).status_code == 409
    assert client.post("/models/import", {"provider": "echo", "kind": "pull", "source": "SmolLM2"}).status_code == 409
    assert client.post("/models/chain", {"agent": "defaults", "op": "reset"}).status_code == 303
    rows = entries(web_app)
    assert [(r["action"], r["target"], r["status"], r["details"]) for r in rows] == [
        ("POST /models/chain", "agent=defaults", 303, {"agent": "defaults", "op": "reset"}),
        ("POST /models/import", "source=SmolLM2", 409, {"provider": "echo", "kind": "pull", "source": "SmolLM2"}),
        ("POST /models/action", "model=echo", 409, {"provider": "echo", "model": "echo", "action": "unload"}),
    ]

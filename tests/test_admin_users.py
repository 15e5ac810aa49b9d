"""``/admin/api/users`` in process: list, create, read, change and disable people; errors in the API's one shape."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.people import person

CONFIG: dict[str, Any] = {
    "agents": {"defaults": {"model": {"primary": "local/echo"}}},
    "models": {"providers": {"local": {"type": "fake", "models": ["echo"]}}},
}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
FIELDS = {"id", "name", "admin", "active", "created_at", "disabled_at", "policy"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    with InProcessGateway(CONFIG, tmp_path_factory.mktemp("users")) as gateway:
        yield gateway


def call(app: InProcessGateway, method: str, path: str, body: Any = None, key: str = ADMIN_KEY) -> httpx.Response:
    return app.http.request(method, f"/admin/api{path}", json=body, headers={"authorization": f"Bearer {key}"})


def make(app: InProcessGateway, name: str, **extra: Any) -> dict[str, Any]:
    answer = call(app, "POST", "/users", {"name": name, "password": "a-long-password", **extra})
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


def sql(app: InProcessGateway, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``statement`` on the gateway's SQLite database (committed)."""
    with sqlite3.connect(app.db_path) as db:
        return db.execute(statement, params).fetchall()


def key_of(app: InProcessGateway, user_id: int | None, *, admin: bool = False) -> str:
    """A key of the person ``user_id``, made by the admin API."""
    body = {"name": f"key of {user_id}", "admin": admin, "user_id": user_id}
    made = app.http.post("/admin/api/keys", headers=ADMIN, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["user_id"] == user_id
    return str(made.json()["key"])


def error(answer: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    if code is not None:
        assert body["code"] == code, body
    if param is not None:
        assert body["param"] == param, body
    return body


def test_create_list_get_and_never_a_password(app: InProcessGateway) -> None:
    made = make(app, "carol", admin=True)
    assert set(made) == FIELDS and made["name"] == "carol" and made["admin"] is True and made["active"] is True
    listed = call(app, "GET", "/users").json()["users"]
    assert made in listed
    assert call(app, "GET", f"/users/{made['id']}").json() == made
    for answer in (call(app, "GET", "/users"), call(app, "GET", f"/users/{made['id']}")):
        assert "password" not in answer.text and "scrypt" not in answer.text
    web = person(app, "carol", "a-long-password")  # and she logs in on the web UI with that password
    assert web.get("/users").status_code == 200  # as an admin
    web.close()


def test_bad_bodies_are_400_a_taken_name_409(app: InProcessGateway) -> None:
    make(app, "dave")
    error(call(app, "POST", "/users", {"name": "dave", "password": "another-password"}), 409, "user_exists", "name")
    error(call(app, "POST", "/users", {"name": "eve", "password": "short"}), 400, param="password")
    error(call(app, "POST", "/users", {"name": "bad name!", "password": "long-enough-pw"}), 400, param="name")
    error(call(app, "POST", "/users", {"name": "eve"}), 400)
    error(call(app, "POST", "/users", {"name": "eve", "password": "long-enough-pw", "role": "x"}), 400)
    error(call(app, "POST", "/users", {"name": 5, "password": "long-enough-pw"}), 400, param="name")
    error(app.http.post("/admin/api/users", content=b"{not json", headers=ADMIN), 400)
    assert not [u for u in call(app, "GET", "/users").json()["users"] if u["name"] == "eve"]


def test_a_key_for_nobody_is_refused(app: InProcessGateway) -> None:
    for user_id in (987654, 0, -1, 2**40):
        refused = app.http.post("/admin/api/keys", headers=ADMIN, json={"name": "k", "user_id": user_id})
        error(refused, 400, "user_not_found", "user_id")


def test_unknown_people_are_404(app: InProcessGateway) -> None:
    for method, body in (("GET", None), ("PATCH", {"admin": True}), ("DELETE", None)):
        for user_id in (987654, 0, 2**40):
            error(call(app, method, f"/users/{user_id}", body), 404, "user_not_found")


def test_update_admin_flag_password_and_disabled(app: InProcessGateway) -> None:
    person = make(app, "frank")
    url = f"/users/{person['id']}"
    changed = call(app, "PATCH", url, {"admin": True})
    assert changed.status_code == 200 and changed.json()["admin"] is True
    token = key_of(app, person["id"])
    assert app.http.get("/v1/models", headers={"authorization": f"Bearer {token}"}).status_code == 200
    disabled = call(app, "PATCH", url, {"disabled": True})
    assert disabled.json()["active"] is False and disabled.json()["disabled_at"] is not None
    assert app.http.get("/v1/models", headers={"authorization": f"Bearer {token}"}).status_code == 401
    enabled = call(app, "PATCH", url, {"disabled": False})
    assert enabled.json()["active"] is True and enabled.json()["disabled_at"] is None
    assert app.http.get("/v1/models", headers={"authorization": f"Bearer {token}"}).status_code == 200
    hashed = sql(app, "SELECT password_hash FROM users WHERE id = ?", (person["id"],))[0][0]
    error(call(app, "PATCH", url, {"password": "short", "admin": False}), 400, param="password")
    after = sql(app, "SELECT password_hash, admin FROM users WHERE id = ?", (person["id"],))[0]
    assert after[0] == hashed and after[1]  # a refused change changes nothing, the admin flag included
    assert call(app, "PATCH", url, {"password": "a-new-long-password"}).status_code == 200
    assert sql(app, "SELECT password_hash FROM users WHERE id = ?", (person["id"],))[0][0] != hashed
    error(call(app, "PATCH", url, {"disabled": "yes"}), 400, param="disabled")
    error(call(app, "PATCH", url, {"name": "renamed"}), 400)


def test_delete_disables_and_keeps_the_persons_data(app: InProcessGateway) -> None:
    person = make(app, "grace")
    token = key_of(app, person["id"])
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    assert app.http.post("/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {token}"}).is_success
    gone = call(app, "DELETE", f"/users/{person['id']}")
    assert gone.status_code == 200 and gone.json()["active"] is False
    again = call(app, "DELETE", f"/users/{person['id']}")  # already disabled: nothing changes
    assert again.status_code == 200 and again.json()["disabled_at"] == gone.json()["disabled_at"]
    assert app.http.get("/v1/models", headers={"authorization": f"Bearer {token}"}).status_code == 401
    assert call(app, "GET", f"/users/{person['id']}").json()["name"] == "grace"  # still listed, still hers:
    assert sql(app, "SELECT count(*) FROM usage WHERE user_id = ?", (person["id"],))[0][0] >= 1
    assert sql(app, "SELECT count(*) FROM api_keys WHERE user_id = ?", (person["id"],))[0][0] == 1


def test_a_key_cannot_disable_its_own_person(app: InProcessGateway) -> None:
    person = make(app, "heidi", admin=True)
    own = key_of(app, person["id"], admin=True)
    error(call(app, "DELETE", f"/users/{person['id']}", key=own), 400, "self_disable", "disabled")
    error(call(app, "PATCH", f"/users/{person['id']}", {"disabled": True}, key=own), 400, "self_disable")
    assert call(app, "GET", f"/users/{person['id']}", key=own).json()["active"] is True


def test_only_admin_keys_pass(app: InProcessGateway) -> None:
    person = make(app, "ivan")
    plain = key_of(app, person["id"])
    calls = [
        ("GET", "/users", None),
        ("POST", "/users", {"name": "mallory", "password": "long-enough-pw", "admin": True}),
        ("GET", f"/users/{person['id']}", None),
        ("PATCH", f"/users/{person['id']}", {"admin": True}),
        ("DELETE", f"/users/{person['id']}", None),
    ]
    for method, path, body in calls:
        error(call(app, method, path, body, key=plain), 403, "admin_required")
        error(call(app, method, path, body, key="mg-not-a-key-at-all-0000"), 401, "invalid_api_key")
        error(app.http.request(method, f"/admin/api{path}", json=body), 401)
    assert call(app, "GET", f"/users/{person['id']}").json()["admin"] is False
    assert not [u for u in call(app, "GET", "/users").json()["users"] if u["name"] == "mallory"]


def test_taking_the_admin_flag_ends_the_persons_sessions(app: InProcessGateway) -> None:
    made = make(app, "judy", admin=True)
    web = person(app, "judy", "a-long-password")
    assert web.get("/users").status_code == 200
    assert call(app, "PATCH", f"/users/{made['id']}", {"admin": False}).json()["admin"] is False
    assert web.get("/users").status_code == 303  # logged out: her next login is a person's, not an admin's
    web.close()
    again = person(app, "judy", "a-long-password")
    assert again.get("/users").status_code == 303 and again.get("/keys").status_code == 200
    again.close()


def test_every_admin_route_is_typed_in_the_document(app: InProcessGateway) -> None:
    document = app.http.get("/schema/openapi.json").json()
    schemas = document["components"]["schemas"]
    admin = {
        (m, p): op for p, item in document["paths"].items() if p.startswith("/admin/api/") for m, op in item.items()
    }
    assert {("get", "/admin/api/users"), ("patch", "/admin/api/users/{user_id}"), ("get", "/admin/api/prices")} <= set(
        admin
    )
    assert ("get", "/admin/api/usage/summary") in admin and ("delete", "/admin/api/users/{user_id}") in admin
    for (method, path), op in admin.items():
        ok = next(status for status in op["responses"] if status.startswith("2"))
        ref = op["responses"][ok]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[1] in schemas, (method, path)
        assert {"401", "403"} <= set(op["responses"]) and op["security"] == [{"bearer": []}], (method, path)
        assert op["tags"] == [path.split("/")[3]]
        if method in ("post", "patch") and not path.endswith("}/{action}"):
            assert "requestBody" in op, (method, path)
    for name in ("UserView", "UserCreate", "UserUpdate", "UsagePage", "UsageSummary", "PriceList"):
        assert name in schemas
    assert "password" not in schemas["UserView"]["properties"]
    assert schemas["UserCreate"]["additionalProperties"] is False


def test_a_persons_own_limits_are_set_changed_and_cleared(app: InProcessGateway) -> None:
    made = make(app, "gina", policy={"models": ["default"], "daily_tokens": 1})
    assert made["policy"] == {"models": ["default"], "daily_tokens": 1}
    key = key_of(app, made["id"])
    body = {"model": "default", "messages": [{"role": "user", "content": "hi there"}]}
    headers = {"authorization": f"Bearer {key}"}
    assert app.http.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    app.wait_rows(1)
    over = app.http.post("/v1/chat/completions", json=body, headers=headers)
    assert over.status_code == 429 and over.json()["error"]["code"] == "budget_exceeded"
    raised = call(app, "PATCH", f"/users/{made['id']}", {"policy": {"models": ["default"], "daily_tokens": 10**6}})
    assert raised.status_code == 200 and raised.json()["policy"]["daily_tokens"] == 10**6
    assert app.http.post("/v1/chat/completions", json=body, headers=headers).status_code == 200  # at once
    error(call(app, "PATCH", f"/users/{made['id']}", {"policy": {"rpm": -1}}), 400, param="policy")
    error(call(app, "PATCH", f"/users/{made['id']}", {"policy": {"tokens": 5}}), 400, param="policy")
    assert call(app, "GET", f"/users/{made['id']}").json()["policy"]["daily_tokens"] == 10**6  # unchanged
    cleared = call(app, "PATCH", f"/users/{made['id']}", {"policy": None})
    assert cleared.json()["policy"] is None
    assert call(app, "PATCH", f"/users/{made['id']}", {"admin": False}).json()["policy"] is None  # unset: kept

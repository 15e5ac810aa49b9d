"""The audit log, in process: admin API actions (keys, config reload) and CLI commands are recorded with who, what,
when and how they ended, never a secret; only admin keys read ``GET /admin/api/audit``."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from minigate.gateway.cli import main
from minigate.gateway.runtime.gateway import Gateway
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

CONFIG: dict[str, Any] = {
    "agents": {"defaults": {"model": {"primary": "local/echo"}}},
    "models": {"providers": {"local": {"type": "fake", "models": ["echo"]}}},
}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def app(inprocess_factory: Callable[..., InProcessGateway]) -> InProcessGateway:
    """A gateway with one fake local provider."""
    return inprocess_factory(CONFIG)


def audit(app: InProcessGateway, headers: dict[str, str] | None = None, **query: Any) -> Any:
    """``GET /admin/api/audit`` after the queued entries are stored; the JSON answer."""

    async def flush(gateway: Gateway) -> None:
        assert gateway.audit is not None
        await gateway.audit.flush()

    app.run(flush)
    answer = app.http.get("/admin/api/audit", headers=headers or ADMIN, params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_admin_api_actions_are_recorded_without_secrets(app: InProcessGateway) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    made = app.http.post("/admin/api/keys", headers=ADMIN, json={"name": "ops", "admin": True, "policy": {"rpm": 5}})
    assert made.status_code == 201
    ops_id, ops_key = made.json()["id"], made.json()["key"]
    as_ops = {"authorization": f"Bearer {ops_key}"}
    patched = app.http.patch(f"/admin/api/keys/{ops_id}", headers=as_ops, json={"policy": {"rpm": 9}})
    assert patched.status_code == 200
    assert app.http.delete("/admin/api/keys/999", headers=as_ops).status_code == 404
    assert app.http.get("/admin/api/keys", headers=ADMIN).status_code == 200  # reading is no action
    entries = audit(app)["entries"]
    assert [(e["action"], e["status"], e["actor"], e["via"]) for e in entries] == [
        ("DELETE /admin/api/keys/{key_id}", 404, f"key {ops_id} (ops)", "api"),
        ("PATCH /admin/api/keys/{key_id}", 200, f"key {ops_id} (ops)", "api"),
        ("POST /admin/api/keys", 201, "admin key", "api"),
    ]
    created, changed = entries[2], entries[1]
    assert created["details"] == {"name": "ops", "admin": True, "policy": {"rpm": 5}}
    assert created["target"] == "name=ops" and created["actor_kind"] == "admin" and created["key_id"] is None
    assert changed["target"] == f"key_id={ops_id}" and changed["details"] == {"policy": {"rpm": 9}}
    assert changed["actor_kind"] == "key" and changed["key_id"] == ops_id
    assert all(before <= datetime.fromisoformat(e["created_at"]) <= datetime.now(UTC) for e in entries)
    stored = json.dumps(entries)
    assert ops_key not in stored and ADMIN_KEY not in stored and ops_key[:12] not in stored


def test_a_config_reload_and_a_model_action_are_recorded(app: InProcessGateway) -> None:
    reload = app.http.post("/admin/reload", headers=ADMIN)  # refused: this gateway's config is no file
    assert reload.status_code == 400
    assert app.http.post("/admin/api/models/local/echo/bogus", headers=ADMIN).status_code == 404
    entries = audit(app)["entries"]
    assert [(e["action"], e["status"], e["target"]) for e in entries] == [
        ("POST /admin/api/models/{provider}/{model}/{action}", 404, "provider=local, model=echo, action=bogus"),
        ("POST /admin/reload", 400, None),
    ]


def test_requests_that_never_got_in_are_not_admin_actions(app: InProcessGateway) -> None:
    user_key = app.http.post("/admin/api/keys", headers=ADMIN, json={"name": "user"}).json()["key"]
    assert (
        app.http.post("/admin/api/keys", headers={"authorization": "Bearer bad"}, json={"name": "x"}).status_code == 401
    )
    as_user = {"authorization": f"Bearer {user_key}"}
    assert app.http.post("/admin/api/keys", headers=as_user, json={"name": "x"}).status_code == 403
    assert [e["action"] for e in audit(app)["entries"]] == ["POST /admin/api/keys"]  # the admin's own


def test_only_admin_keys_read_the_log_and_it_pages_and_filters(app: InProcessGateway) -> None:
    user_key = app.http.post("/admin/api/keys", headers=ADMIN, json={"name": "user"}).json()["key"]
    for n in range(3):
        app.http.post("/admin/api/keys", headers=ADMIN, json={"name": f"k{n}"})
    assert app.http.get("/admin/api/audit").status_code == 401
    refused = app.http.get("/admin/api/audit", headers={"authorization": f"Bearer {user_key}"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
    first = audit(app, limit=2)
    assert [e["target"] for e in first["entries"]] == ["name=k2", "name=k1"]
    rest = audit(app, limit=2, before=first["next_before"])
    assert [e["target"] for e in rest["entries"]] == ["name=k0", "name=user"] and rest["next_before"] is not None
    assert audit(app, limit=2, before=rest["next_before"]) == {"entries": [], "next_before": None}
    assert len(audit(app, actor="admin key")["entries"]) == 4
    assert audit(app, actor="nobody")["entries"] == []
    assert len(audit(app, action="/admin/api/keys")["entries"]) == 4


def _cli(config: str, *args: str, stdin: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main([*args, "--config", config])


def test_cli_commands_are_recorded_by_the_os_user(
    app: InProcessGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USER", "operator")
    monkeypatch.setenv("LOGNAME", "operator")
    config = tmp_path / "minigate.json"
    config.write_text(json.dumps({"server": {"data_dir": str(app.data_dir)}}))
    run = str(config)
    password = "cli-password-123"
    assert (
        _cli(run, "users", "create", "carol", "--password-stdin", stdin=password + "\n", monkeypatch=monkeypatch) == 0
    )
    assert (
        _cli(run, "keys", "create", "carols", "--user", "carol", "--rpm", "7", stdin="", monkeypatch=monkeypatch) == 0
    )
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert _cli(run, "users", "disable", "nobody", stdin="", monkeypatch=monkeypatch) == 1
    assert _cli(run, "users", "list", stdin="", monkeypatch=monkeypatch) == 0  # reading is no action
    entries = audit(app)["entries"]
    assert [(e["action"], e["status"], e["actor"], e["via"], e["actor_kind"]) for e in entries] == [
        ("users disable", 404, "cli (operator)", "cli", "cli"),
        ("keys create", 200, "cli (operator)", "cli", "cli"),
        ("users create", 200, "cli (operator)", "cli", "cli"),
    ]
    assert entries[2]["details"] == {"name": "carol", "admin": False, "password": "[hidden]"}
    assert entries[1]["details"] == {"name": "carols", "admin": False, "user": "carol", "rpm": 7}
    assert entries[1]["target"].startswith("key_id=")
    stored = json.dumps(entries)
    assert password not in stored and secret not in stored and secret.startswith("mg-")


def test_the_people_api_is_recorded_without_passwords(app: InProcessGateway) -> None:
    made = app.http.post("/admin/api/users", headers=ADMIN, json={"name": "dana", "password": "dana-password-1"})
    assert made.status_code == 201, made.text
    user_id = made.json()["id"]
    patch = {"password": "dana-password-2", "policy": {"daily_tokens": 1000}}
    assert app.http.patch(f"/admin/api/users/{user_id}", headers=ADMIN, json=patch).status_code == 200
    entries = audit(app)["entries"]
    assert [(e["action"], e["target"], e["status"], e["details"]) for e in entries] == [
        ("PATCH /admin/api/users/{user_id}", f"user_id={user_id}", 200,
         {"password": "[hidden]", "policy": {"daily_tokens": 1000}}),
        ("POST /admin/api/users", "name=dana", 201, {"name": "dana", "password": "[hidden]"}),
    ]  # fmt: skip
    assert "dana-password" not in json.dumps(entries)


def test_json_sent_with_a_form_type_is_read_as_json(app: InProcessGateway) -> None:
    # curl -d sends application/x-www-form-urlencoded; the admin API reads the JSON all the same, and so does the log.
    sent = {**ADMIN, "content-type": "application/x-www-form-urlencoded"}
    made = app.http.post("/admin/api/users", headers=sent, content=b'{"name": "erin", "password": "erin-password-1"}')
    assert made.status_code == 201, made.text
    (entry,) = audit(app)["entries"]
    assert entry["details"] == {"name": "erin", "password": "[hidden]"} and entry["target"] == "name=erin"

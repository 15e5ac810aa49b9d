"""``minigate users``: create (password from stdin), list, passwd, disable, enable, on the config's database; the
person then logs in to a gateway on that database."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from minigate.gateway.cli import main
from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient
from tests.web.people import login_form


@pytest.fixture
def app(inprocess_factory: Callable[..., InProcessGateway]) -> InProcessGateway:
    """A gateway whose only model is in process."""
    providers = {"echo": {"type": "fake", "models": ["echo"]}}
    return inprocess_factory(
        {"agents": {"defaults": {"model": {"primary": "echo/echo"}}}, "models": {"providers": providers}}
    )


def _config(app: InProcessGateway, tmp_path: Path) -> str:
    path = tmp_path / "minigate.json"
    path.write_text(json.dumps({"server": {"data_dir": str(app.data_dir)}}))
    return str(path)


def users(config: str, *args: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["users", *args, "--config", config])


def test_the_users_command_manages_people(
    app: InProcessGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(app, tmp_path)
    assert users(config, "create", "alice", "--password-stdin", stdin="alice-password\n", monkeypatch=monkeypatch) == 0
    assert users(config, "create", "root", "--admin", "--password-stdin", stdin="root-password\n",
                 monkeypatch=monkeypatch) == 0  # fmt: skip
    assert "created admin" in capsys.readouterr().out
    assert users(config, "create", "alice", "--password-stdin", stdin="other-password\n", monkeypatch=monkeypatch) == 1
    assert "already" in capsys.readouterr().err
    assert users(config, "create", "bob", "--password-stdin", stdin="short\n", monkeypatch=monkeypatch) == 1
    assert "8.." in capsys.readouterr().err
    assert users(config, "list", monkeypatch=monkeypatch) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 3 and "alice" in listing[1] and "person" in listing[1] and "active" in listing[1]
    assert "root" in listing[2] and "admin" in listing[2] and "bob" not in "".join(listing)

    web = WebClient(app)
    assert login_form(web, "alice", "alice-password").status_code == 303
    assert (
        users(config, "passwd", "alice", "--password-stdin", stdin="alice-new-password\n", monkeypatch=monkeypatch) == 0
    )
    assert login_form(WebClient(app), "alice", "alice-password").status_code == 401
    assert login_form(WebClient(app), "alice", "alice-new-password").status_code == 303

    assert users(config, "disable", "alice", monkeypatch=monkeypatch) == 0
    assert web.get("/chat").status_code == 303  # her session ended with it
    assert login_form(WebClient(app), "alice", "alice-new-password").status_code == 401
    assert users(config, "disable", "alice", monkeypatch=monkeypatch) == 1
    assert users(config, "list", monkeypatch=monkeypatch) == 0
    assert "disabled" in capsys.readouterr().out.splitlines()[1]
    assert users(config, "enable", "alice", monkeypatch=monkeypatch) == 0
    assert login_form(WebClient(app), "alice", "alice-new-password").status_code == 303
    assert users(config, "disable", "nobody", monkeypatch=monkeypatch) == 1
    assert "nobody called 'nobody'" in capsys.readouterr().err


def test_keys_create_user_gives_the_key_to_a_person(
    app: InProcessGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(app, tmp_path)
    assert users(config, "create", "kid", "--password-stdin", stdin="kid-password\n", monkeypatch=monkeypatch) == 0
    assert main(["keys", "create", "kid-laptop", "--user", "nobody", "--config", config]) == 1
    assert "nobody called 'nobody'" in capsys.readouterr().err
    assert main(["keys", "create", "kid-laptop", "--user", "kid", "--daily-tokens", "100", "--config", config]) == 0
    token = capsys.readouterr().out.strip()
    kid = WebClient(app)
    assert login_form(kid, "kid", "kid-password").status_code == 303
    assert "kid-laptop" in kid.get("/keys").text  # hers: she sees it
    app.client(key=token).chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert [row["user_id"] for row in app.wait_rows(1)] == [1]


def test_users_set_policy_limits_a_person_over_every_key_of_theirs(
    app: InProcessGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(app, tmp_path)
    assert users(config, "create", "kid", "--password-stdin", stdin="kid-password\n", monkeypatch=monkeypatch) == 0
    assert users(config, "set-policy", "kid", "--models", "default", "--no-remote", "--daily-tokens", "1",
                 monkeypatch=monkeypatch) == 0  # fmt: skip
    assert '"daily_tokens":1' in capsys.readouterr().out
    assert users(config, "list", monkeypatch=monkeypatch) == 0
    assert '"models":["default"],"remote":false,"daily_tokens":1' in capsys.readouterr().out.splitlines()[1]
    tokens = []
    for name in ("kid-laptop", "kid-phone"):  # two keys without limits of their own
        assert main(["keys", "create", name, "--user", "kid", "--config", config]) == 0
        tokens.append(capsys.readouterr().out.strip())
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    first = app.http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {tokens[0]}"})
    assert first.status_code == 200, first.text
    app.wait_rows(1)
    second = app.http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {tokens[1]}"})
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "budget_exceeded"
    assert second.json()["error"]["message"].startswith("Your account has used its daily token budget (1 tokens).")
    assert users(config, "set-policy", "kid", "--daily-tokens", "1000", monkeypatch=monkeypatch) == 0
    assert '"models":["default"],"remote":false,"daily_tokens":1000' in capsys.readouterr().out  # the rest is kept
    assert users(config, "set-policy", "nobody", "--rpm", "1", monkeypatch=monkeypatch) == 1
    assert users(config, "set-policy", "kid", "--rpm", "-1", monkeypatch=monkeypatch) == 1
    assert "rpm must be a whole number" in capsys.readouterr().err

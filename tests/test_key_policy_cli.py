"""``minigate keys create NAME --models ... --rpm ...`` and ``minigate keys set-policy``, on the config's database; a
gateway on that database then applies the policy."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from minigate.gateway.cli import main
from tests.inprocess import InProcessGateway

CONFIG = {
    "agents": {"defaults": {"model": {"primary": "echo/echo"}}},
    "models": {"providers": {"echo": {"type": "fake", "models": ["echo", "other"]}}},
}


def chat(app: InProcessGateway, key: str, model: str = "default") -> httpx.Response:
    return app.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )


def test_keys_create_and_set_policy(
    inprocess_factory: Callable[..., InProcessGateway], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if time.time() % 60 > 50:  # the requests per minute below share one minute
        time.sleep(60.5 - time.time() % 60)
    app = inprocess_factory(CONFIG)
    config = tmp_path / "minigate.json"
    config.write_text(json.dumps({"server": {"data_dir": str(app.data_dir)}}))
    options = ["--models", "echo/*,default", "--no-remote", "--rpm", "60", "--tpm", "100000", "--concurrency", "2"]
    options += ["--daily-tokens", "1000", "--monthly-usd", "5", "--expires", "2999-01-01"]
    assert main(["keys", "create", "kid", *options, "--config", str(config)]) == 0
    key = capsys.readouterr().out.strip()
    assert chat(app, key).status_code == 200
    assert chat(app, key, "echo/other").status_code == 200
    assert main(["keys", "list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert '{"models":["echo/*","default"],"remote":false,"rpm":60,"tpm":100000,"concurrency":2,' in listed
    assert "expires 2999-01-01 00:00 UTC" in listed
    # set-policy replaces the values it is given and keeps the others
    assert main(["keys", "set-policy", "1", "--models", "default", "--rpm", "3", "--config", str(config)]) == 0
    assert '"models":["default"],"remote":false,"rpm":3,' in capsys.readouterr().out
    time.sleep(2.1)  # the gateway reads a key again after 2 s, and with it the policy another process changed
    assert chat(app, key, "echo/other").json()["error"]["code"] == "model_not_allowed"
    assert chat(app, key).status_code == 200  # the third request this minute
    assert chat(app, key).json()["error"]["code"] == "rate_limit_exceeded"
    assert main(["keys", "set-policy", "1", "--clear", "--expires", "2020-01-01", "--config", str(config)]) == 0
    assert "no limits; expires 2020-01-01 00:00 UTC" in capsys.readouterr().out
    # bad options: exit 2 with a message, nothing changed
    assert main(["keys", "create", "x", "--rpm", "-1", "--config", str(config)]) == 2
    assert "rpm must be a whole number" in capsys.readouterr().err
    assert main(["keys", "set-policy", "1", "--expires", "soon", "--config", str(config)]) == 2
    assert main(["keys", "set-policy", "99", "--rpm", "1", "--config", str(config)]) == 1

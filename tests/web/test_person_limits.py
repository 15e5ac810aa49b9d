"""A person's own limits (the People page): they bind the person's web chat and every key of theirs together, a
key's own limits apply as well, and other people are not touched."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.inprocess import InProcessGateway
from tests.test_limits import away_from_minute_end
from tests.web.helpers import PASSWORD, WebClient, web_config
from tests.web.people import add_person, key_ids, new_key, person


@dataclass
class Box:
    app: InProcessGateway
    remote: FakeUpstream
    admin: WebClient
    kid: WebClient
    kid_id: int
    kid_keys: list[str]
    bob_key: str


def _config(remote: FakeUpstream) -> dict[str, Any]:
    # "far" is a remote provider nobody can reach (TEST-NET-1): a request that tried it would take seconds and fail.
    config = web_config(remote)
    config["models"]["providers"]["far"] = {"endpoint": "http://192.0.2.1:9/v1", "models": ["gpt-4o"], "timeout": 30}
    config["agents"]["mixed"] = {"model": {"primary": "far/gpt-4o", "fallbacks": ["echo/echo"]}}
    return config


@pytest.fixture
def box(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.delenv("MINIGATE_CHAT_PUBLIC", raising=False)
    with FakeUpstream("remote") as remote, InProcessGateway(_config(remote), tmp_path_factory.mktemp("p")) as app:
        remote.set_default(Reply(content="from far away"))
        admin = WebClient(app)
        assert admin.login().status_code == 303
        kid_id = add_person(admin, "kid", "kid-password")
        add_person(admin, "bob", "bob-password")
        kid, bob = person(app, "kid", "kid-password"), person(app, "bob", "bob-password")
        keys = [new_key(kid, name)[1] for name in ("laptop", "phone")]
        yield Box(app, remote, admin, kid, kid_id, keys, new_key(bob, "bob")[1])
        for web in (admin, kid, bob):
            web.close()


def chat(box: Box, key: str, model: str = "default") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi there"}]}
    return box.app.http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def picker(page: str) -> set[str]:
    """The names the chat's model picker offers."""
    select = re.search(r'<select[^>]*name="model".*?</select>', page, re.S)
    assert select is not None
    return set(re.findall(r'<option value="([^"]+)"', select.group(0)))


def set_limits(box: Box, **fields: str) -> httpx.Response:
    return box.admin.post(f"/users/{box.kid_id}/policy", fields)


def test_a_daily_budget_binds_the_persons_keys_and_web_chat_together(box: Box) -> None:
    saved = set_limits(box, daily_tokens="1")
    assert saved.status_code == 200 and f"Person {box.kid_id}&#39;s limits saved." in saved.text
    row = re.search(rf'<tr id="user-{box.kid_id}">.*?</tr>', saved.text, re.S)
    assert row is not None and "1 tokens / day" in row.group(0)
    assert chat(box, box.kid_keys[0]).status_code == 200
    box.app.wait_rows(1)
    refused = chat(box, box.kid_keys[1])  # another key of hers, without limits of its own
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
    assert error["message"].startswith("Your account has used its daily token budget (1 tokens).")
    assert int(refused.headers["retry-after"]) >= 1
    answer = box.kid.send(box.kid.new_chat(), "hello")  # her web chat presents no key: still hers to pay
    assert "Your account has used its daily token budget" in answer
    assert chat(box, box.bob_key).status_code == 200  # nobody else's
    own = box.kid.get("/keys").text  # she sees what binds her, and what she used
    assert "Your account's limits" in own and "1 tokens / day" in own and re.search(r"today [1-9]\d* tokens", own)
    page = box.admin.get("/users").text  # what she used, beside her limits
    assert re.search(rf'<tr id="user-{box.kid_id}">.*?today \d+ tokens', page, re.S)
    cleared = set_limits(box)  # every field empty: no limits of her own
    assert cleared.status_code == 200
    assert chat(box, box.kid_keys[1]).status_code == 200
    assert "You said: hello again" in box.kid.send(box.kid.new_chat(), "hello again")


def test_allowed_models_and_local_only_hold_for_every_key_of_the_person(box: Box) -> None:
    assert set_limits(box, models="default, mixed", local_only="on").status_code == 200
    key = box.kid_keys[0]
    refused = chat(box, key, "echo/other")
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "Your account may not use the model 'echo/other'."
    assert refused.json()["error"]["code"] == "model_not_allowed"
    answered = chat(box, key, "mixed")  # the agent's remote primary is skipped: its local fallback answers at once
    assert answered.status_code == 200 and "You said" in answered.json()["choices"][0]["message"]["content"]
    listed = box.app.http.get("/v1/models", headers={"authorization": f"Bearer {key}"}).json()["data"]
    assert {m["id"] for m in listed} == {"default", "mixed"}
    assert set_limits(box, local_only="on").status_code == 200
    far = chat(box, box.kid_keys[1], "far/gpt-4o")
    assert far.status_code == 403 and far.json()["error"]["code"] == "remote_not_allowed"
    assert far.json()["error"]["message"].startswith("Your account may use only local models")
    assert chat(box, box.bob_key, "echo/other").status_code == 200
    offered = picker(box.kid.get("/chat").text)  # her chat's model picker: local only now, any model
    assert "far/gpt-4o" not in offered and {"default", "mixed", "echo/other"} <= offered
    assert "far/gpt-4o" in picker(box.admin.get("/chat").text)


def test_a_key_limit_and_the_persons_limit_both_hold(box: Box) -> None:
    assert set_limits(box, rpm="5").status_code == 200
    assert box.admin.post(f"/keys/{key_ids(box.kid)[0]}/policy", {"rpm": "2"}).status_code == 200
    away_from_minute_end()
    laptop, phone = box.kid_keys
    assert [chat(box, laptop).status_code for _ in range(3)] == [200, 200, 429]  # the key's own 2 a minute
    assert [chat(box, phone).status_code for _ in range(4)] == [200, 200, 200, 429]  # 5 a minute over both keys
    last = chat(box, phone)
    assert last.json()["error"]["message"] == "Rate limit reached for your account: 5 requests per minute."


def test_the_people_page_refuses_bad_limits(box: Box) -> None:
    bad = set_limits(box, rpm="lots")
    assert bad.status_code == 422 and "rpm must be a number" in bad.text
    assert box.admin.post("/users/999999/policy", {"rpm": "1"}).status_code == 404
    assert box.kid.post(f"/users/{box.kid_id}/policy", {"rpm": "100"}).status_code == 403  # not her own to raise

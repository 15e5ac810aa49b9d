"""Keys with a policy, in process: allowed models, local only, expiry, and the admin API that sets them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

# "far" is a remote provider nobody can reach (TEST-NET-1): a request that tried it would take seconds and fail.
CONFIG: dict[str, Any] = {
    "agents": {
        "defaults": {"model": {"primary": "local/echo"}},
        "mixed": {"model": {"primary": "far/gpt-4o", "fallbacks": ["local/echo"]}},
        "cloud": {"model": {"primary": "far/gpt-4o"}},
    },
    "models": {
        "providers": {
            "local": {"type": "fake", "models": ["echo", "other"]},
            "far": {"endpoint": "http://192.0.2.1:9/v1", "models": ["gpt-4o"], "timeout": 30},
        },
        "aliases": {"quick": "local/echo"},
    },
}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def new_key(app: InProcessGateway, **body: Any) -> str:
    """A key created through the admin API with ``body`` (name, policy, expires_at)."""
    answer = app.http.post("/admin/api/keys", headers=ADMIN, json={"name": "k", **body})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["key"])


def chat(app: InProcessGateway, key: str, model: str = "default") -> httpx.Response:
    return app.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi there"}]},
    )


def test_allowed_models_by_name_and_pattern(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(CONFIG)
    key = new_key(app, policy={"models": ["local/e*", "default"]})
    assert chat(app, key, "default").status_code == 200
    assert chat(app, key, "local/echo").status_code == 200
    assert chat(app, key, "quick").status_code == 200  # an alias of one deployment the pattern allows
    for model in ("local/other", "mixed", "cloud"):
        refused = chat(app, key, model)
        assert refused.status_code == 403, model
        assert refused.json()["error"] == {
            "message": f"This API key may not use the model {model!r}.",
            "type": "permission_error",
            "param": "model",
            "code": "model_not_allowed",
        }
    assert chat(app, ADMIN_KEY, "local/other").status_code == 200  # the bootstrap key has no policy
    assert chat(app, new_key(app), "local/other").status_code == 200  # nor has a key made without one


def test_local_only_key_skips_remote_deployments(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(CONFIG)
    key = new_key(app, policy={"remote": False})
    answer = chat(app, key, "mixed")  # far/gpt-4o first, local/echo after: only the local one is tried
    assert answer.status_code == 200
    assert answer.headers["x-minigate-provider"] == "local"
    assert answer.headers["x-minigate-fallbacks"] == "0"
    refused = chat(app, key, "cloud")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "remote_not_allowed"
    assert refused.json()["error"]["param"] == "model"
    assert chat(app, key, "far/gpt-4o").json()["error"]["code"] == "remote_not_allowed"
    rows = app.wait_rows(1)
    assert [(r["provider"], r["fallbacks"]) for r in rows] == [("local", 0)]  # nothing reached "far"


def test_expired_key_is_refused_like_a_revoked_one(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(CONFIG)
    old = new_key(app, expires_at="2020-01-01")
    refused = chat(app, old)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.json()["error"]["message"] == "This API key expired on 2020-01-01 00:00 UTC."
    assert chat(app, new_key(app, expires_at="2999-12-31")).status_code == 200
    # an admin moves the date on: the key works again at once
    key_id = app.http.get("/admin/api/keys", headers=ADMIN).json()["keys"][0]["id"]
    moved = app.http.patch(f"/admin/api/keys/{key_id}", headers=ADMIN, json={"expires_at": "2999-01-01T12:00:00"})
    assert moved.status_code == 200
    assert moved.json()["expires_at"].startswith("2999-01-01T12:00:00")
    assert chat(app, old).status_code == 200


def test_admin_api_sets_and_clears_policies(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(CONFIG)
    made = app.http.post(
        "/admin/api/keys", headers=ADMIN, json={"name": "kid", "policy": {"models": ["default"], "rpm": 5}}
    ).json()
    assert made["policy"] == {"models": ["default"], "rpm": 5}
    assert made["key"].startswith("mg-")
    assert chat(app, made["key"], "local/echo").status_code == 403
    url = f"/admin/api/keys/{made['id']}"
    changed = app.http.patch(url, headers=ADMIN, json={"policy": {"models": ["local/*"], "daily_usd": 2.5}})
    assert changed.json()["policy"] == {"models": ["local/*"], "daily_usd": 2.5}
    assert chat(app, made["key"], "local/echo").status_code == 200  # applied at once in this process
    assert app.http.patch(url, headers=ADMIN, json={"policy": None}).json()["policy"] is None
    listed = app.http.get("/admin/api/keys", headers=ADMIN).json()["keys"]
    assert listed[0]["used"]["day_tokens"] > 0
    # refusals in the admin API's shape, naming what is wrong
    for body in ({"policy": {"rpm": -1}}, {"policy": {"colour": "red"}}, {"expires_at": "next tuesday"}):
        bad = app.http.patch(url, headers=ADMIN, json=body)
        assert bad.status_code == 400, body
        assert bad.json()["error"]["type"] == "invalid_request_error"
    assert app.http.patch("/admin/api/keys/999", headers=ADMIN, json={}).status_code == 404
    assert (
        app.http.post("/admin/api/keys", headers={"authorization": f"Bearer {made['key']}"}, json={}).status_code == 403
    )
    assert app.http.delete(url, headers=ADMIN).json() == {"id": made["id"], "revoked": True}
    assert chat(app, made["key"]).status_code == 401


def test_other_protocols_and_streams_follow_the_policy(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(CONFIG)
    key = new_key(app, policy={"models": ["default"], "rpm": 100})
    headers = {"authorization": f"Bearer {key}"}
    message = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    refused = app.http.post("/v1/messages", headers=headers, json={"model": "local/echo", **message})
    assert refused.status_code == 403
    assert refused.json()["type"] == "error" and refused.json()["error"]["type"] == "permission_error"
    assert app.http.post("/v1/messages", headers=headers, json={"model": "default", **message}).status_code == 200
    responses = app.http.post("/v1/responses", headers=headers, json={"model": "local/echo", "input": "hi"})
    assert responses.status_code == 403 and responses.json()["error"]["code"] == "model_not_allowed"
    body = {"model": "default", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with app.http.stream("POST", "/v1/chat/completions", headers=headers, json=body) as stream:
        assert stream.status_code == 200
        assert stream.headers["x-ratelimit-limit-requests"] == "100"
        assert "[DONE]" in "".join(stream.iter_text())


def test_models_list_shows_what_the_key_may_use(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(CONFIG)
    key = new_key(app, policy={"models": ["local/*", "default", "mixed", "cloud"], "remote": False})
    headers = {"authorization": f"Bearer {key}"}
    listed = [m["id"] for m in app.http.get("/v1/models", headers=headers).json()["data"]]
    assert listed == ["default", "mixed", "quick", "local/echo", "local/other"]  # "cloud" has no local deployment
    everything = [m["id"] for m in app.http.get("/v1/models", headers=ADMIN).json()["data"]]
    assert {"cloud", "quick", "far/gpt-4o"} <= set(everything)
    assert app.http.get("/v1/models/local/echo", headers=headers).status_code == 200
    assert app.http.get("/v1/models/far/gpt-4o", headers=headers).json()["error"]["code"] == "model_not_found"


def test_admin_api_key_ids_past_the_column(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    app = inprocess_factory(CONFIG)
    for method in ("DELETE", "PATCH"):
        answer = app.http.request(method, "/admin/api/keys/28614471006986559488", headers=ADMIN, json={})
        assert answer.status_code == 404, method

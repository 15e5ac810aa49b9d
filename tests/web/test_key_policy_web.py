"""The keys page's limits: an admin sets them when creating a key and changes them later; the key obeys at once; a
person sees their key's limits and what it used but cannot change them."""

from __future__ import annotations

import re

from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient
from tests.web.people import add_person, person

_NEW_KEY = re.compile(r'id="new-key"[^>]*value="(mg-[^"]+)"')


def _chat(app: InProcessGateway, key: str, model: str = "default") -> int:
    answer = app.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    return answer.status_code


def test_admin_sets_and_changes_a_keys_limits(web_app: InProcessGateway, client: WebClient) -> None:
    add_person(client, "alice", "alice-password")
    made = client.post(
        "/keys", {"name": "kid", "user": "1", "models": "default", "daily_tokens": "1000", "expires": ""}
    )
    assert made.status_code == 200, made.text
    key = _NEW_KEY.search(made.text)
    assert key is not None
    assert _chat(web_app, key.group(1)) == 200
    page = client.get("/keys").text
    assert "models: default · 1000 tokens / day" in page
    assert re.search(r"today \d+ tokens, \$0\.0000", page)
    key_id = re.search(r'action="/keys/(\d+)/policy"', page)
    assert key_id is not None
    saved = client.post(
        f"/keys/{key_id.group(1)}/policy",
        {"models": "", "local_only": "on", "monthly_usd": "2.5", "rpm": "", "expires": "2999-01-31"},
    )
    assert saved.status_code == 200
    assert "limits saved" in saved.text
    assert "local only · $2.5 / month · expires 2999-01-31" in saved.text
    assert 'name="local_only" checked' in saved.text and 'value="2.5"' in saved.text
    refused = client.post(f"/keys/{key_id.group(1)}/policy", {"rpm": "many"})
    assert refused.status_code == 422
    assert "rpm must be a number" in refused.text
    assert client.post("/keys/999/policy", {"rpm": "1"}).status_code == 404
    # the person sees the limits and the use, and cannot change them
    alice = person(web_app, "alice", "alice-password")
    mine = alice.get("/keys").text
    assert "local only · $2.5 / month" in mine
    assert "/policy" not in mine
    assert alice.post(f"/keys/{key_id.group(1)}/policy", {"monthly_usd": "1000"}).status_code == 403
    made_by_alice = alice.post("/keys", {"name": "hers", "rpm": "1000000"})  # limits from a person are ignored
    assert made_by_alice.status_code == 200
    assert "1000000" not in alice.get("/keys").text
    alice.close()

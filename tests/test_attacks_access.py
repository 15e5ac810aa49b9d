"""Attacks on what a caller may reach (issue 7): another key's or visitor's usage and conversations, and files
outside ``models_dir`` through model names, against the gateway in process. See ``tests/test_attacks.py`` for the
whole list."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from minigate.providers.onnx.cli import main as models_cli
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.helpers import PASSWORD, WebClient

ECHO = {"type": "fake", "models": ["echo"]}
SECRET_TEXT = "my bank pin is 8472"


def _key(server: InProcessGateway, name: str) -> tuple[int, str]:
    web = WebClient(server)
    web.login(ADMIN_KEY)
    page = web.post("/keys", {"name": name}).text
    web.close()
    token = page.split('id="new-key" class="secret" readonly value="')[1].split('"')[0]
    ids = re.findall(r"/keys/(\d+)/revoke", page)
    return max(int(i) for i in ids), token


def test_a_key_reads_no_other_keys_usage(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    server = inprocess_factory({"agents": {"defaults": {"model": {"primary": "echo/echo"}}},
                                "models": {"providers": {"echo": ECHO}}})  # fmt: skip
    (a_id, a), (_, b) = _key(server, "alice"), _key(server, "bob")
    answer = server.client(a).chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
    assert server.rows()[0]["key_id"] == a_id and answer.id
    with server.new_http(headers={"authorization": f"Bearer {b}"}, follow_redirects=False) as bob:
        for path in ("/admin/api/models", "/admin/api/jobs", "/admin/api/jobs/1"):
            refused = bob.get(path)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
        assert bob.post("/admin/reload").status_code == 403
        # The web pages that show usage need an admin session; a key in the header is no session.
        for path in ("/usage", f"/usage?key={a_id}", f"/usage.csv?key={a_id}", "/keys", "/models"):
            assert bob.get(path).status_code == 303
            assert bob.get(path, headers={"hx-request": "true"}).status_code == 403
        for path in (f"/v1/usage?key={a_id}", "/v1/usage", f"/v1/keys/{a_id}", "/v1/dashboard/billing/usage"):
            assert bob.get(path).status_code == 404  # there is no per-key usage route on /v1 at all
    web = WebClient(server)
    assert web.login(b).status_code == 401  # a key that is not an admin key opens no web session
    assert web.get("/usage").status_code == 303
    web.close()


def test_a_visitor_reads_and_changes_no_other_visitors_conversations(
    inprocess_factory: Callable[..., InProcessGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("MINIGATE_CHAT_PUBLIC", "1")
    server = inprocess_factory({"agents": {"defaults": {"model": {"primary": "echo/echo"}}},
                                "models": {"providers": {"echo": ECHO}}})  # fmt: skip
    alice, bob, admin = WebClient(server), WebClient(server), WebClient(server)
    try:
        for visitor in (alice, bob):
            assert visitor.get("/chat").status_code == 200  # a guest session of its own
            visitor.refresh_csrf()
        assert admin.login().status_code == 303
        own = alice.new_chat()
        assert SECRET_TEXT in alice.send(own, SECRET_TEXT)
        bobs = bob.new_chat()
        ids = [*range(1, max(own, bobs) + 3), own, 0, -1, 2**31]  # every id there is, and some there is not
        for conversation in ids:
            if conversation == bobs:
                continue
            seen = [bob.get(f"/chat/{conversation}"), bob.get(f"/chat/{conversation}", headers={"hx-request": "true"})]
            for path, data in [("send", {"content": "mine now"}), ("regenerate", {}), ("rename", {"title": "pwned"}),
                               ("settings", {"model": "default", "system_prompt": "pwned"})]:  # fmt: skip
                seen.append(bob.post(f"/chat/{conversation}/{path}", data))
                seen.append(bob.post(f"/chat/{conversation}/{path}", data, htmx=True))
            for answer in seen:
                assert answer.status_code in (404, 405) or conversation < 1, (conversation, answer.status_code)
                assert SECRET_TEXT not in answer.text
            bob.post(f"/chat/{conversation}/delete", {})
        for listing in (bob.get("/chat"), admin.get("/chat")):
            assert SECRET_TEXT not in listing.text and f"/chat/{own}" not in listing.text
        assert admin.get(f"/chat/{own}").status_code == 404  # an admin's own list holds only admins' chats
        for path in ("/usage", "/usage.csv", "/keys"):
            assert bob.get(path).status_code == 303
        page = alice.get(f"/chat/{own}")  # alice's conversation is untouched
        assert page.status_code == 200 and SECRET_TEXT in page.text
        assert "pwned" not in page.text and "mine now" not in page.text
    finally:
        for web in (alice, bob, admin):
            web.close()


BAD_NAMES = {
    "dot-dot": "../outside",
    "dot-dot twice": "../../fs/outside",
    "absolute": "{outside}",
    "percent-encoded": "%2e%2e%2foutside",
    "percent-encoded slash": "..%2foutside",
    "double-encoded": "%252e%252e%252foutside",
    "backslashes": "..\\outside",
    "NUL": "..\x00/outside",
    "NUL after a name": "outside\x00",
    "dot-dot alone": "..",
    "home": "~/outside",
    "symlink name": "link",
}


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file and folder under ``root``: files with their size, mtime and (small ones) content."""
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        if path.is_dir() and not path.is_symlink():  # a folder's own times change with work inside models_dir
            found[str(path.relative_to(root))] = (0, 0, b"")
            continue
        content = path.read_bytes() if path.is_file() and not path.is_symlink() and stat.st_size < 4096 else b""
        found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns, content)
    return found


def _wait_job(http: httpx.Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/admin/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still running after 60 s")


def test_model_names_touch_nothing_outside_models_dir(
    inprocess_factory: Callable[..., InProcessGateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = tmp_path / "fs"
    models, outside = fs / "models", fs / "outside"
    for folder in (models / "kept", outside):  # both look like models: a traversal would find one
        folder.mkdir(parents=True)
        (folder / "genai_config.json").write_text('{"model": {"decoder": {"filename": "model.onnx"}}}')
    (outside / "canary.txt").write_text("do not touch")
    (models / "link").symlink_to(outside, target_is_directory=True)  # planted by someone with a shell
    # Only loopback, and a cache of its own, for whatever a pull job might try to fetch.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("MINIGATE_CACHE", str(tmp_path / "cache"))
    local = {"type": "onnxruntime-genai", "models_dir": str(models), "idle_ttl": None}
    server = inprocess_factory({"agents": {"defaults": {"model": {"primary": "echo/echo"}}},
                                "models": {"providers": {"echo": ECHO, "local": local}}})  # fmt: skip
    before = _snapshot(fs)
    names = [n.replace("{outside}", str(outside)) for n in BAD_NAMES.values()]
    with server.new_http(headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as http:
        for name in names:
            for model in (name, f"local/{name}", f"local/{name.lstrip('/')}", f"echo/../local/{name}"):
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                answer = http.post("/v1/chat/completions", json=body)
                assert answer.status_code in (400, 404), (model, answer.status_code, answer.text)
            for path in (quote(name, safe=""), quote(name, safe="/%"), quote(quote(name, safe=""), safe="")):
                for action in ("load", "unload", "reload"):
                    answer = http.post(f"/admin/api/models/local/{path}/{action}")
                    # Unloading what was never loaded is a harmless no-op, whatever the name.
                    harmless = action == "unload" and answer.status_code == 200
                    assert 400 <= answer.status_code < 500 or harmless, (name, action, answer.status_code)
                deleted = http.delete(f"/admin/api/models/local/{path}")
                # The planted link is no model (it resolves outside): a clean 4xx, nothing deleted.
                assert 400 <= deleted.status_code < 500, (name, deleted.status_code)
        jobs = [http.post("/admin/api/models/local/pull", json={"name": name}) for name in names]
        jobs += [http.post("/admin/api/models/local/pull", json={"model": m}) for m in ("../outside", "pypi:../x==1")]
        jobs += [http.post("/admin/api/models/local/import", json={"source": str(models / "kept"), "name": name})
                 for name in names]  # fmt: skip
        for job in jobs:
            if job.status_code == 202:
                assert _wait_job(http, job.json()["job"]["id"])["state"] == "failed"
            else:
                assert 400 <= job.status_code < 500, job.text
        assert json.loads(http.get("/v1/models").text)["data"]  # the gateway still answers
    for name in names:
        for command in (["rm", name], ["verify", name], ["import", str(models / "kept"), name]):
            assert models_cli(["--models-dir", str(models), "--quiet", *command]) == 1, command
    assert (outside / "canary.txt").read_text() == "do not touch"
    assert _snapshot(fs) == before

"""Two ``minigate serve`` processes sharing one PostgreSQL database, as replicas behind a load balancer.

Both start at once on a new, empty database (so they race to migrate it), answer requests, and see each other's
work: usage rows, keys created and revoked through either one's web UI, web sessions and conversations, admin
jobs and the login limit.
PostgreSQL comes from :mod:`tests.pgserver` (never skipped).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from tests.gateway_server import ADMIN_KEY, free_port
from tests.pgserver import Databases, postgres_server

PASSWORD = "replica-admin-password"
CONFIG: dict[str, Any] = {
    "agents": {"defaults": {"model": {"primary": "echo/echo"}}},
    "models": {"providers": {"echo": {"type": "fake", "models": ["echo"]}}},
}
_CSRF = re.compile(r'name="_csrf" value="([^"]+)"')
_LOGIN = re.compile(r'name="_login" value="([^"]+)"')
_NEW_KEY = re.compile(r'id="new-key"[^>]*value="(mg-[^"]+)"')


class Replica:
    """``minigate serve`` in a process of its own, with its own config file and port."""

    def __init__(self, folder: Path, database_url: str, config: dict[str, Any] | None = None) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.port = free_port()
        server = {"data_dir": str(folder / "data"), "database_url": database_url, "workers": 1}
        config = {**(config or CONFIG), "server": server}
        (folder / "minigate.json").write_text(json.dumps(config))
        env = {**os.environ, "MINIGATE_ADMIN_KEY": ADMIN_KEY, "MINIGATE_ADMIN_PASSWORD": PASSWORD}
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
        self.log = (folder / "gateway.log").open("wb")
        command = [sys.executable, "-m", "minigate.gateway.cli", "serve", "--config", str(folder / "minigate.json")]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), "--no-pull"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10, follow_redirects=False)
        self.csrf: str | None = None

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"replica on {self.port} did not start:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.folder / "gateway.log").read_text(errors="replace")[-4000:]

    def chat(self, key: str = ADMIN_KEY, content: str = "hello") -> httpx.Response:
        return self.http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "default", "messages": [{"role": "user", "content": content}]},
        )

    def login(self) -> None:
        token = _LOGIN.search(self.http.get("/login").text)
        assert token is not None
        response = self.http.post("/login", data={"_login": token.group(1), "secret": PASSWORD, "next": "/keys"})
        assert response.status_code == 303, response.text
        self.refresh_csrf()

    def refresh_csrf(self) -> None:
        match = _CSRF.search(self.http.get("/keys").text)
        assert match is not None
        self.csrf = match.group(1)

    def post_form(self, path: str, data: dict[str, str]) -> httpx.Response:
        assert self.csrf is not None
        return self.http.post(path, data={**data, "_csrf": self.csrf})

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def databases() -> Databases:
    try:
        return postgres_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def shared_db(databases: Databases) -> Iterator[URL]:
    url = databases.create()
    yield url
    databases.drop(url)


@pytest.fixture
def replicas(tmp_path: Path, shared_db: URL) -> Iterator[tuple[Replica, Replica]]:
    """Two replicas started at the same moment on one fresh database (a plain postgresql:// URL)."""
    url = shared_db.set(drivername="postgresql").render_as_string(hide_password=False)
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            started.append(Replica(tmp_path / name, url))
        for replica in started:
            replica.wait_ready()
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


def _rows(url: URL, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def test_two_replicas_share_one_postgresql_database(replicas: tuple[Replica, Replica], shared_db: URL) -> None:
    a, b = replicas
    assert not (a.folder / "data" / "minigate.db").exists()  # nothing went to SQLite

    # Requests to both: every answer's usage row is in the shared table, whichever replica served it.
    request_ids = {"a": set(), "b": set()}
    for i in range(10):
        for name, replica in (("a", a), ("b", b)):
            response = replica.chat(content=f"{name} {i}")
            assert response.status_code == 200, response.text
            request_ids[name].add(response.headers["x-request-id"])
    stored = {r[0] for r in _rows(shared_db, "SELECT request_id FROM usage WHERE status = 200")}
    assert request_ids["a"] <= stored and request_ids["b"] <= stored
    assert len(stored) == 20
    assert _rows(shared_db, "SELECT count(*) FROM alembic_version") == [(1,)]  # migrated once, by one of them

    # A key created through a's web UI works on b at once; revoked through b, a stops taking it within 2 s.
    a.login()
    page = a.post_form("/keys", {"name": "made on a"}).text
    match = _NEW_KEY.search(page)
    assert match is not None, page[-2000:]
    key = match.group(1)
    answer = b.chat(key=key)
    assert answer.status_code == 200, answer.text
    assert a.chat(key=key).status_code == 200  # a now has it cached as valid
    (key_id,) = _rows(shared_db, "SELECT id FROM api_keys WHERE name = 'made on a'")[0]
    assert _rows(shared_db, "SELECT count(*) FROM usage WHERE key_id = :k", k=key_id) == [(2,)]

    # The web session made on a is valid on b too: no sticky sessions needed behind the load balancer.
    b.http.cookies = a.http.cookies
    b.refresh_csrf()
    assert b.post_form(f"/keys/{key_id}/revoke", {}).status_code == 200
    assert b.chat(key=key).status_code == 401  # at once on the replica that revoked it
    deadline = time.monotonic() + 5
    while a.chat(key=key).status_code != 401:
        assert time.monotonic() < deadline, "a kept accepting a key revoked on b"
        time.sleep(0.2)

    # b's usage page counts the requests both served; a conversation started on a is listed on b.
    usage = b.http.get("/usage").text
    total = int(usage.split('<dd id="total-requests">')[1].split("<")[0].replace(",", ""))
    assert total == len(_rows(shared_db, "SELECT id FROM usage"))
    new_chat = a.post_form("/chat/new", {"model": "default", "title": "shared"})
    assert new_chat.status_code == 303, new_chat.text
    conversation = new_chat.headers["location"]
    assert b.http.get(conversation).status_code == 200
    assert conversation in b.http.get("/chat").text


def test_a_cooldown_on_one_replica_is_honoured_by_the_other(tmp_path: Path, shared_db: URL) -> None:
    # a gets a 429 with Retry-After from the upstream: within about a second b skips that upstream too.
    from tests.fakes.upstream import FakeUpstream, Status

    with FakeUpstream("up", api_key="up-key") as upstream:
        config = {
            "agents": {"defaults": {"model": {"primary": "up/gpt", "fallbacks": ["echo/echo"]}}},
            "models": {
                "providers": {
                    "up": {"endpoint": upstream.url, "models": ["gpt"], "auth": {"type": "api_key", "value": "up-key"}},
                    "echo": {"type": "fake", "models": ["echo"]},
                }
            },
        }
        url = shared_db.set(drivername="postgresql").render_as_string(hide_password=False)
        a, b = Replica(tmp_path / "a", url, config), Replica(tmp_path / "b", url, config)
        try:
            a.wait_ready()
            b.wait_ready()
            upstream.script(Status(429, headers={"retry-after": "30"}))
            first = a.chat()
            assert first.status_code == 200 and first.headers["x-minigate-fallbacks"] == "1"
            assert len(upstream.requests) == 1
            time.sleep(2.5)  # both replicas sync once a second
            for replica in (a, b):
                answer = replica.chat()
                assert answer.status_code == 200
                assert answer.headers["x-minigate-provider"] == "echo"
            assert len(upstream.requests) == 1  # b never called the rate-limited upstream
            assert _rows(shared_db, "SELECT ref, level FROM cooldowns") == [("up/gpt", 0)]
        finally:
            a.stop()
            b.stop()


def test_jobs_and_the_login_limit_are_shared_by_replicas(tmp_path: Path, shared_db: URL) -> None:
    # A job started on a is polled on b to its end; ten failed logins on a leave b refusing the eleventh.
    local = {"type": "onnxruntime-genai", "models_dir": str(tmp_path / "models"), "idle_ttl": None}
    config = {**CONFIG, "models": {"providers": {**CONFIG["models"]["providers"], "local": local}}}
    url = shared_db.set(drivername="postgresql").render_as_string(hide_password=False)
    a, b = Replica(tmp_path / "a", url, config), Replica(tmp_path / "b", url, config)
    try:
        a.wait_ready()
        b.wait_ready()
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        body = {"source": str(tmp_path), "name": "copy"}  # not a model folder: the import fails in its child
        started = [r.http.post("/admin/api/models/local/import", headers=admin, json=body) for r in (a, b)]
        assert [s.status_code for s in started] == [202, 202]
        job_id, other_id = (s.json()["job"]["id"] for s in started)
        assert job_id != other_id
        deadline = time.monotonic() + 60
        while (job := b.http.get(f"/admin/api/jobs/{job_id}", headers=admin).json())["state"] == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["state"] == "failed" and job["status"] == 400 and job["progress"], job
        for _ in range(10):
            token = _LOGIN.search(a.http.get("/login").text)
            assert token is not None
            assert a.http.post("/login", data={"_login": token.group(1), "secret": "wrong"}).status_code == 401
        token = _LOGIN.search(b.http.get("/login").text)
        assert token is not None
        refused = b.http.post("/login", data={"_login": token.group(1), "secret": PASSWORD})
        assert refused.status_code == 401 and "Too many failed attempts" in refused.text
    finally:
        a.stop()
        b.stop()

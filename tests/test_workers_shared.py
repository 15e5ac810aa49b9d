"""``minigate serve --workers 2``: admin jobs and login throttling are the same on every worker (both live in the
database), as a client that opens a new connection per request (curl) sees them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve_process import ServeProcess
from tests.test_workers import AUTH, clients_per_worker
from tests.web.helpers import PASSWORD, WebClient


@pytest.fixture
def served(tmp_path: Path) -> Any:
    local = {"type": "onnxruntime-genai", "models_dir": str(tmp_path / "models"), "idle_ttl": None}
    config = {
        "agents": {"defaults": {"model": {"primary": "echo/echo"}}},
        "models": {"providers": {"echo": {"type": "fake", "models": ["echo"]}, "local": local}},
        "server": {"workers": 2},
    }
    with ServeProcess(config, tmp_path, env={"MINIGATE_ADMIN_PASSWORD": PASSWORD}) as gateway:
        yield gateway


def test_a_job_polled_over_fresh_connections_never_404s(served: ServeProcess, tmp_path: Path) -> None:
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    ids = []
    for pid, client in clients_per_worker(served.base).items():  # one job started on each worker
        body = {"source": str(not_a_model), "name": f"copy{pid}"}
        started = client.post("/admin/api/models/local/import", headers=AUTH, json=body)
        assert started.status_code == 202, started.text
        ids.append(started.json()["job"]["id"])
        client.close()
    assert len(set(ids)) == 2
    answered: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while len(answered) < 2 or any(job["state"] == "running" for job in answered.values()):
        assert time.monotonic() < deadline, answered
        for job_id in ids:
            answer = httpx.get(f"{served.base}/admin/api/jobs/{job_id}", headers=AUTH, timeout=10)  # a new connection
            assert answer.status_code == 200, answer.text
            answered[job_id] = answer.json()
        time.sleep(0.1)
    for job in answered.values():
        assert job["state"] == "failed" and job["status"] == 400, job
        assert job["progress"] and job["progress"][-1].startswith("error:"), job
    for _ in range(10):  # and the outcome stays there for every worker
        listed = httpx.get(f"{served.base}/admin/api/jobs", headers=AUTH, timeout=10).json()["jobs"]
        assert [job["id"] for job in listed] == sorted(ids, reverse=True)


def test_the_login_limit_holds_across_workers(served: ServeProcess) -> None:
    webs = []
    for client in clients_per_worker(served.base).values():
        web = WebClient(served)
        web.http.close()
        web.http = client
        webs.append(web)
    one, two = webs
    try:
        for _ in range(10):
            assert one.login("wrong").status_code == 401
        refused = two.login(PASSWORD)  # the eleventh attempt, on the other worker
        assert refused.status_code == 401 and "Too many failed attempts" in refused.text
    finally:
        for web in webs:
            web.close()

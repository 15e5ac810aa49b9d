"""``/admin/api/jobs`` over two gateways in process on one SQLite database, as two workers or replicas: a job
started through one is read, with its progress and outcome, through the other; ids never collide."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def config(tmp_path: Path) -> dict[str, Any]:
    """A fake default model and a local models folder (empty) to import into, over one shared database."""
    local = {"type": "onnxruntime-genai", "models_dir": str(tmp_path / "models"), "idle_ttl": None}
    return {
        "agents": {"defaults": {"model": {"primary": "echo/echo"}}},
        "models": {"providers": {"echo": {"type": "fake", "models": ["echo"]}, "local": local}},
        "server": {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"},
    }


def start_import(gateway: InProcessGateway, source: Path, name: str) -> dict[str, Any]:
    answer = gateway.http.post(
        "/admin/api/models/local/import", headers=ADMIN, json={"source": str(source), "name": name}
    )
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()["job"]
    return job


def finished(gateway: InProcessGateway, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
    """The job as ``gateway`` reads it once it has ended (every answer on the way is a 200)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = gateway.http.get(f"/admin/api/jobs/{job_id}", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        if job["state"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_a_job_started_through_one_gateway_is_read_through_another(
    inprocess_factory: Callable[..., InProcessGateway], tmp_path: Path
) -> None:
    one, two = inprocess_factory(config(tmp_path)), inprocess_factory(config(tmp_path))
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    started = start_import(one, not_a_model, "copy")
    assert started["state"] == "running" and started["target"] == "local/copy"
    job = finished(two, started["id"])
    assert job["id"] == started["id"] and job["kind"] == "import" and job["target"] == "local/copy"
    assert job["state"] == "failed" and job["status"] == 400, job  # refused by the import, in its child process
    assert job["progress"] and job["progress"][-1].startswith("error:"), job  # the child's last line
    assert job["finished"] >= job["started"]
    assert finished(one, started["id"]) == job  # both answer from the database


def test_job_ids_do_not_collide_and_both_gateways_list_every_job(
    inprocess_factory: Callable[..., InProcessGateway], tmp_path: Path
) -> None:
    one, two = inprocess_factory(config(tmp_path)), inprocess_factory(config(tmp_path))
    bad_name = tmp_path / "whatever"
    ids = [start_import(gateway, bad_name, "../x")["id"] for gateway in (one, two, one, two)]
    assert len(set(ids)) == 4
    for job_id in ids:
        job = finished(one, job_id)
        assert job["state"] == "failed" and job["status"] == 400 and "name" in job["error"], job
    for gateway in (one, two):
        listed = gateway.http.get("/admin/api/jobs", headers=ADMIN).json()["jobs"]
        assert [job["id"] for job in listed] == sorted(ids, reverse=True)
    missing = two.http.get(f"/admin/api/jobs/{max(ids) + 1}", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"

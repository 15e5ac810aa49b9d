"""``minigate serve --workers 2`` with a local model: both gateway processes answer from one engine process."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.gateway_server import ADMIN_KEY
from tests.providers.onnx.helpers import TINY
from tests.serve_process import ServeProcess
from tests.test_workers import clients_per_worker


def _engines_of(supervisor: int) -> list[int]:
    """The engine processes whose parent is ``supervisor``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == supervisor and b"minigate.providers.onnx.engine" in command:
            found.append(int(stat.parent.name))
    return found


def test_two_workers_share_one_engine(tmp_path: Path, models_dir: Path) -> None:
    config = {
        "agents": {"defaults": {"model": {"primary": f"local/{TINY}"}}},
        "models": {"providers": {"local": {"type": "onnxruntime-genai", "models_dir": str(models_dir)}}},
        "server": {"workers": 2},
    }
    with ServeProcess(config, tmp_path) as served:
        assert served.process is not None
        clients = clients_per_worker(served.base)
        body = {"model": f"local/{TINY}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        for client in clients.values():
            answer = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {ADMIN_KEY}"}, json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["usage"]["completion_tokens"] == 4
        engines = _engines_of(served.process.pid)
        assert len(engines) == 1, engines
        for client in clients.values():  # each worker names the same engine process for the model
            listed = client.get("/admin/api/models", headers={"authorization": f"Bearer {ADMIN_KEY}"})
            assert listed.status_code == 200, listed.text
            assert str(engines[0]) in listed.text
            client.close()
        served.stop()  # SIGTERM: the workers drain, then the supervisor stops the engine
        assert served.wait(5) == 0
        assert not Path(f"/proc/{engines[0]}").exists()


def test_a_model_deleted_through_one_worker_leaves_the_others_routes(tmp_path: Path, models_dir: Path) -> None:
    own = tmp_path / "models"
    for name in (TINY, "spare"):
        shutil.copytree(models_dir / TINY, own / name)
    config = {
        "agents": {"defaults": {"model": {"primary": f"local/{TINY}"}}},
        "models": {"providers": {"local": {"type": "onnxruntime-genai", "models_dir": str(own), "idle_ttl": None}}},
        "server": {"workers": 2},
    }
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    with ServeProcess(config, tmp_path / "gw") as served:
        one, two = clients_per_worker(served.base).values()
        assert "local/spare" in two.get("/v1/models", headers=auth).text
        deleted = one.delete("/admin/api/models/local/spare", headers=auth)
        assert deleted.status_code == 200, deleted.text
        deadline = time.monotonic() + 10
        while "local/spare" in two.get("/v1/models", headers=auth).text:  # the supervisor's SIGHUP reached it
            assert time.monotonic() < deadline, served.log_text()[-3000:]
            time.sleep(0.1)
        one.close()
        two.close()

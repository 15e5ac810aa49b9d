"""The parts of ``serve --workers N`` that need no process: the setting, the sockets, the role, merged metrics."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from minigate.gateway.cli import main
from minigate.gateway.ops.metrics_share import merge, publish
from minigate.gateway.supervisor import MAX_DEFAULT_WORKERS, WorkerRole, default_workers, listening_sockets
from tests.test_config import edit, parse, refusal


def test_the_setting_and_its_default() -> None:
    assert parse(edit("server.workers", 3)).server.workers == 3
    assert parse(edit("server.workers", None)).server.workers is None
    for bad in (0, 65):
        assert refusal(edit("server.workers", bad)) == ["server.workers: must be from 1 to 64 processes"]
    assert 1 <= default_workers() <= MAX_DEFAULT_WORKERS


def test_a_bad_workers_option_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "0", "--no-pull"]) == 2
    assert "--workers must be from 1 to 64" in capsys.readouterr().err


def test_one_listening_socket_per_worker_on_one_port() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(sockets) == 3 and len(ports) == 1 and all(s.get_inheritable() for s in sockets)
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=2):
            pass  # the kernel queues it on one of them
    finally:
        for s in sockets:
            s.close()


def test_the_role_travels_in_the_environment(tmp_path: Path) -> None:
    role = WorkerRole(1, 7, tmp_path, 1234)
    assert WorkerRole.from_env(role.to_env()) == role
    assert WorkerRole.from_env(None) is None and WorkerRole.from_env("") is None


def test_metrics_of_every_worker_labelled_under_one_header(tmp_path: Path) -> None:
    def body(requests: int) -> bytes:
        return (
            "# HELP minigate_requests_total Requests.\n# TYPE minigate_requests_total counter\n"
            f'minigate_requests_total{{endpoint="chat",status="200"}} {requests}\n'
            "# HELP minigate_shutting_down 1 while draining.\n# TYPE minigate_shutting_down gauge\n"
            "minigate_shutting_down 0\n"
        ).encode()

    publish(tmp_path, 1, body(5))
    publish(tmp_path, 0, body(1))  # stale: the scraped worker's own body wins
    (tmp_path / "metrics-x.prom").write_text("not a worker's file\n")
    merged = merge(tmp_path, 0, body(3)).decode().splitlines()
    assert merged == [
        "# HELP minigate_requests_total Requests.",
        "# TYPE minigate_requests_total counter",
        'minigate_requests_total{worker="0",endpoint="chat",status="200"} 3',
        'minigate_requests_total{worker="1",endpoint="chat",status="200"} 5',
        "# HELP minigate_shutting_down 1 while draining.",
        "# TYPE minigate_shutting_down gauge",
        'minigate_shutting_down{worker="0"} 0',
        'minigate_shutting_down{worker="1"} 0',
    ]

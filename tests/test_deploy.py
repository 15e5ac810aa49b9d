"""The deployment files: compose.yaml renders under real compose implementations (deploy/validate.sh).

No container engine runs here, so this checks what compose itself can: every profile renders, each picks the
right services, the GPU variant reserves NVIDIA devices, the port binds as configured, MINIGATE_TORCH reaches
the cpu build only, a missing admin key is refused. Building and running the image is
``bash deploy/validate.sh --run`` where podman works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _compose_found() -> bool:
    if shutil.which("docker-compose") or os.environ.get("MINIGATE_COMPOSE_V2"):
        return True
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


def test_compose_renders_every_profile() -> None:
    if not _compose_found():
        pytest.fail("no compose implementation: apt-get install docker-compose (the README's test command does)")
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "validate.sh"), "--no-build"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checks = [line for line in result.stdout.splitlines() if line.startswith("ok: ")]
    assert any("an empty MINIGATE_ADMIN_KEY is refused" in line for line in checks), result.stdout
    if os.environ.get("MINIGATE_COMPOSE_V2"):
        assert any("each profile starts the right services" in line for line in checks), result.stdout
        assert any("MINIGATE_TORCH=cpu reaches the cpu build only" in line for line in checks), result.stdout


def test_example_config_is_valid_and_keeps_everything_in_the_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    from minigate.gateway.plugins.loader import builtin_extensions, configure_file

    path = ROOT / "deploy" / "minigate.json"
    monkeypatch.setenv("MINIGATE_EXECUTION_PROVIDER", "cpu")
    monkeypatch.setenv("MINIGATE_DATABASE_URL", "")
    config = configure_file(path, builtin_extensions())
    assert config.database_url() == f"sqlite+aiosqlite:///{path.parent / 'data' / 'minigate.db'}"
    monkeypatch.setenv("MINIGATE_DATABASE_URL", "postgresql+asyncpg://minigate:pw@postgres:5432/minigate")
    assert configure_file(path, builtin_extensions()).database_url().startswith("postgresql+asyncpg://")
    # Relative paths resolve against the config file's folder: the data volume, once the entrypoint copied it.
    raw = json.loads(path.read_text())
    assert raw["models"]["providers"]["local"]["models_dir"] == "./models"
    assert raw["server"]["data_dir"] == "./data"


def test_env_example_leaves_every_secret_empty() -> None:
    secrets = ("MINIGATE_ADMIN_KEY", "MINIGATE_ADMIN_PASSWORD", "POSTGRES_PASSWORD")
    lines = (ROOT / ".env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    for name in secrets:
        assert values[name] == "", f"{name} must be empty in .env.example, so nobody runs with a published secret"
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()

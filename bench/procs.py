"""Process helpers of the benchmarks: ports, spawning and stopping, CPU and memory of a process, readiness.

Shared by bench_gateway.py, bench_load.py, load_rig.py, bench_page.py and bench_usage_page.py. Everything runs on
127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
KEY = "bench-admin-key-0123456789"
HEADERS = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
Proc = subprocess.Popen[bytes]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used by process ``pid``, or by the whole machine (all cores) for None."""
    if pid is None:  # /proc/stat "cpu" line: everything but idle and iowait
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory field of /proc/PID/status (VmRSS by default) in MB; NaN if the field is missing."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def answers(port: int, method: str, path: str, payload: bytes | None = None) -> bool:
    """True when ``method path`` answers 200 (a fresh connection each time)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, body=payload, headers=HEADERS)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def wait_until(check: Any, timeout: float, step: float = 0.005) -> float:
    """Poll ``check()`` until it is true and return that monotonic time; RuntimeError after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return time.monotonic()
        time.sleep(step)
    raise RuntimeError("timed out waiting for a subprocess to answer")


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | Path = ROOT) -> Proc:
    """Start ``args`` with stdout and stderr appended to ``log`` (``env`` added to this environment)."""
    with log.open("ab") as f:
        return subprocess.Popen(args, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def stop(proc: Proc) -> None:
    """Terminate ``proc`` and wait for it (killed after 15 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_config(
    config: dict[str, Any], folder: Path, env: dict[str, str] | None = None, timeout: float = 20
) -> tuple[Proc, str]:
    """``minigate serve`` of ``config`` (written to ``folder``/minigate.json; its log beside it) on a free port: the
    process and its base URL, once /health answers."""
    path = folder / "minigate.json"
    path.write_text(json.dumps(config))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "minigate.gateway.cli",
        "serve",
        "--workers=1",
        "--config",
        str(path),
        "--port",
        str(port),
    ]
    proc = spawn(cmd, folder / "gateway.log", {"PYTHONPATH": str(ROOT), **(env or {})})
    try:
        wait_until(lambda: answers(port, "GET", "/health"), timeout, step=0.1)
    except RuntimeError:
        stop(proc)
        raise SystemExit(f"the gateway did not start: see {folder / 'gateway.log'}") from None
    return proc, f"http://{HOST}:{port}"

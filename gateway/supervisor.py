"""``minigate serve --workers N``: a supervisor process that holds the port and runs N gateway processes on it.

The supervisor migrates the database once, creates a private runtime folder (0700), starts the engine host
(local models: one engine process per model for all the gateway processes, :mod:`minigate.providers.onnx.engine_host`)
and binds one listening socket per worker on the port with ``SO_REUSEPORT``, so the kernel spreads new
connections across the processes. Worker ``i`` is ``minigate serve`` again, told by ``MINIGATE_WORKER`` which
inherited socket to serve; a worker that exits unasked is started again on the same socket (nothing queued on it
is lost) after a backoff. SIGTERM/SIGINT: the supervisor closes its copies of the sockets, passes SIGTERM on, waits
for every worker to drain and exits 0. SIGHUP is passed on (each worker reloads its config file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from minigate.gateway.config.schema import Config
from minigate.providers.onnx.engine_host import EngineHost
from minigate.providers.registry import ENGINE_HOST_ENV

__all__ = ["WORKER_ENV", "Supervisor", "WorkerRole", "default_workers", "listening_sockets"]

log = logging.getLogger("minigate")

WORKER_ENV = "MINIGATE_WORKER"
MAX_DEFAULT_WORKERS = 4  # the default's cap: past a few processes, SQLite's single writer is the limit
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before restarting a worker that died, by crashes in a row
STEADY_AFTER = 60.0  # a worker that ran this long before dying starts the backoff again from the shortest


def default_workers() -> int:
    """``server.workers`` when unset: one process per core the gateway may use, at most ``MAX_DEFAULT_WORKERS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What a gateway process started by the supervisor is: its number, its socket, the shared runtime folder."""

    index: int
    fd: int
    runtime_dir: Path
    supervisor: int  # the supervisor's pid: a worker whose parent is gone stops

    def to_env(self) -> str:
        return json.dumps({"index": self.index, "fd": self.fd, "dir": str(self.runtime_dir), "pid": self.supervisor})

    @classmethod
    def from_env(cls, value: str | None) -> WorkerRole | None:
        """The role in ``$MINIGATE_WORKER`` (None when this process is no supervisor's worker)."""
        if not value:
            return None
        raw = json.loads(value)
        return cls(int(raw["index"]), int(raw["fd"]), Path(raw["dir"]), int(raw["pid"]))


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port (port 0: one chosen by the system), ``SO_REUSEPORT`` on each; where
    the system has no ``SO_REUSEPORT``, one socket that every worker shares."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reuse_port = getattr(socket, "SO_REUSEPORT", None)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if reuse_port is not None else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port is not None:
                sock.setsockopt(socket.SOL_SOCKET, reuse_port, 1)
            sockets.append(sock)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(2048)
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets if len(sockets) == count else sockets * count


class Supervisor:
    """Runs ``workers`` gateway processes (``argv``: the ``serve`` command line); see the module docstring."""

    def __init__(self, argv: Sequence[str], config: Config, host: str, port: int, workers: int) -> None:
        self.argv, self.config, self.host, self.port, self.workers = list(argv), config, host, port, workers
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._stop = asyncio.Event()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean stop, 1 if it could not start."""
        from minigate.gateway.storage import open_database

        database = await open_database(self.config.database_url())  # migrations, once, before any worker
        await database.close()
        runtime = Path(tempfile.mkdtemp(prefix="minigate-"))  # 0700: the engine socket and metrics files
        host = EngineHost(runtime / "engines.sock")
        await host.start()
        try:
            sockets = listening_sockets(self.host, self.port, self.workers)
        except OSError:
            await host.close()
            shutil.rmtree(runtime, ignore_errors=True)
            raise
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._signal_all, signal.SIGHUP)
        port = sockets[0].getsockname()[1]
        log.info("supervisor pid %s: %d workers on %s:%s", os.getpid(), self.workers, self.host, port)
        env = {**os.environ, ENGINE_HOST_ENV: str(host.path)}
        keepers = [
            asyncio.create_task(self._keep(WorkerRole(i, sock.fileno(), runtime, os.getpid()), env))
            for i, sock in enumerate(sockets)
        ]
        await self._stop.wait()
        log.info("supervisor: stopping %d workers", len(self.procs))
        for sock in sockets:  # new connections are refused from now on; the workers finish what they have
            sock.close()
        self._signal_all(signal.SIGTERM)
        budget = self.config.server.shutdown_grace + 15
        done, _ = await asyncio.wait(keepers, timeout=budget)
        if len(done) < len(keepers):
            log.warning("supervisor: workers still running %.0f s after SIGTERM: killed", budget)
            self._signal_all(signal.SIGKILL)
            await asyncio.wait(keepers, timeout=5)
        await host.close()
        shutil.rmtree(runtime, ignore_errors=True)
        return 0

    def _signal_all(self, sig: int) -> None:
        for proc in list(self.procs.values()):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def _keep(self, role: WorkerRole, env: dict[str, str]) -> None:
        """Run worker ``role.index``; start it again after a backoff when it exits unasked."""
        crashes = 0
        while not self._stop.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "minigate.gateway.cli",
                *self.argv,
                env={**env, WORKER_ENV: role.to_env()},
                pass_fds=(role.fd,),
                start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only; it passes SIGTERM on
            )
            self.procs[role.index] = proc
            if self._stop.is_set():  # asked to stop while it was starting
                proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            if self._stop.is_set():
                log.info("worker %d (pid %s) stopped (exit code %s)", role.index, proc.pid, code)
                return
            crashes = 1 if time.monotonic() - started > STEADY_AFTER else crashes + 1
            wait = BACKOFF[min(crashes, len(BACKOFF)) - 1]
            log.error(
                "worker %d (pid %s) exited unasked (exit code %s); starting it again in %.1f s",
                role.index,
                proc.pid,
                code,
                wait,
                extra={"event": "worker_restart", "worker": role.index, "exit_code": code},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)

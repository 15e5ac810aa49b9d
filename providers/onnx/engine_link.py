"""A gateway process's client of a model engine shared through the supervisor's :class:`EngineHost`.

:class:`LinkedWorkerClient` is a :class:`WorkerClient` whose "process" is a unix connection to the host
(``minigate serve --workers N``): the same frames, the same Generations. What differs: starting attaches (the
host starts the engine unless it runs), stopping detaches (the engine stops when no process holds it), ``pid``
is the engine's, and a client told ``retired`` (another process hot-swapped or unloaded the model) stops
counting as alive, so the provider drains it and attaches again on its next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minigate.providers.base import ProviderError, UpstreamUnavailable
from minigate.providers.onnx.protocol import encode_frame, read_frame
from minigate.providers.onnx.worker import WorkerClient, WorkerOptions, engine_options

__all__ = ["LinkedWorkerClient"]


class _Connection:
    """A connection to the host in the shape :class:`WorkerClient` expects of its process."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stdin, self.stdout = writer, reader
        self.stderr = None
        self.pid: int | None = None
        self.returncode: int | None = None
        self._ended = asyncio.Event()

    def ended(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._ended.set()
        self.stdin.close()

    def kill(self) -> None:
        self.ended(-9)

    async def wait(self) -> int:
        await self._ended.wait()
        return self.returncode or 0


class LinkedWorkerClient(WorkerClient):
    """One gateway process's hold on a model engine run by the host at ``socket``; see the module docstring."""

    def __init__(
        self,
        model: str,
        model_dir: Path,
        options: WorkerOptions,
        socket: str,
        *,
        fresh: bool = False,
        on_retired: Callable[[WorkerClient], None] | None = None,
    ):
        """``on_retired``: called when the host says another process replaced or unloaded the engine."""
        super().__init__(model, model_dir, options)
        self.on_retired = on_retired
        self.socket = socket
        self.fresh = fresh  # a hot swap: the host starts a new engine even when one runs
        self.everywhere = False  # stopping unloads the engine for every process (an explicit unload)
        self.retired = False
        self._exit_code = 0

    async def start(self) -> None:
        """Attach to the host's engine for this model (started now unless it runs)."""
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket, limit=1 << 20)
        except OSError as exc:
            raise UpstreamUnavailable(f"the model host of {self.model} is not reachable: {exc}") from exc
        connection = _Connection(reader, writer)
        self.proc = connection  # type: ignore[assignment]
        hello = {"op": "attach", "model_dir": str(self.model_dir), "options": engine_options(self.options)}
        writer.write(encode_frame({**hello, "fresh": self.fresh, "start_timeout": self.options.start_timeout}))
        try:
            first = await asyncio.wait_for(read_frame(reader), self.options.start_timeout + 5)
        except (asyncio.IncompleteReadError, TimeoutError, ValueError, ConnectionError) as exc:
            await self.kill()
            raise UpstreamUnavailable(f"worker for {self.model} did not start: {exc!r}") from exc
        if first.get("ev") == "unavailable":
            await self.kill()
            raise UpstreamUnavailable(f"worker for {self.model} did not start: {first.get('message')}")
        if first.get("ev") != "ready":
            await self.kill()
            raise ProviderError(
                f"model {self.model} cannot be loaded: {first.get('message')}", status=500, code="model_load_failed"
            )
        self.ready = first
        connection.pid = int(first.get("pid") or 0) or None
        self._tasks.append(asyncio.create_task(self._read_events()))

    @property
    def alive(self) -> bool:
        """True while attached to a running engine that no other process replaced."""
        return super().alive and not self.retired

    def shutdown_frame(self) -> dict[str, Any]:
        """Detach (with ``everywhere``: unload the engine for every process)."""
        return {"op": "shutdown", "everywhere": self.everywhere}

    async def kill(self) -> None:
        """Drop the connection at once (the engine is the host's to stop)."""
        if self.proc is not None:
            self.proc.kill()

    def _dispatch(self, message: dict[str, Any]) -> None:
        ev = message.get("ev")
        if ev == "retired":
            self.retired = True
            if self.on_retired is not None:
                self.on_retired(self)
        elif ev == "exit":
            self._exit_code = int(message.get("code") or 0)
            if message.get("message"):
                self._stderr.append(str(message["message"])[-2000:])
        else:
            super()._dispatch(message)

    async def _read_events(self) -> None:
        assert isinstance(self.proc, _Connection)
        reason = "closed its connection"
        try:
            while True:
                self._dispatch(await read_frame(self.proc.stdout))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # a corrupt frame
            reason = f"sent a bad frame ({exc})"
        self.proc.ended(self._exit_code)
        self._fail_all(f"worker for {self.model} {reason} (exit code {self._exit_code}) {self.stderr_tail()}".strip())

"""The gateway's side of a model's worker process: :class:`WorkerClient` and each request's :class:`Generation`.

The model runs in ``python -m minigate.providers.onnx.engine`` (onnxruntime-genai holds the GIL). A dead worker fails
its requests with one shared ``cause``, so the crash counts as one failure of the deployment.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minigate.providers.base import ProviderError, UpstreamUnavailable
from minigate.providers.onnx.protocol import GenRequest, encode_frame, read_frame

__all__ = ["Generation", "Piece", "WorkerClient", "WorkerOptions", "engine_command", "engine_options"]

_ids = itertools.count(1)
_workers = itertools.count(1)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# The request field a worker's refusal is about, by its code.
_PARAMS = {
    "context_length_exceeded": "messages",
    "invalid_tools": "tools",
    "invalid_response_format": "response_format",
}


@dataclass(slots=True)
class WorkerOptions:
    """How a worker runs its model."""

    execution_provider: str = "cpu"
    max_batch_size: int = 8
    max_groups: int = 4
    queue_size: int = 64
    max_context: int = 2048
    default_max_tokens: int = 1024
    cpu_threads: int | None = None
    gpu_memory_bytes: int | None = None
    device_choice: dict[str, Any] | None = None  # a plugin back end and device (minigate.providers.onnx.device_choice)
    merge_tokens: int = 64
    ttft_target: float = 0.5
    grow_tokens: int = 256
    prefix_cache: str | int | None = "1GiB"  # the worker's prefix cache budget (config.OnnxProviderConfig)
    prefix_reuse: str = "exact"  # or "generated" (config.OnnxProviderConfig)
    settle_delay: float = 0.05  # seconds before an idle worker prefills a cached answer (prefix_cache.SETTLE_DELAY)
    start_timeout: float = 120.0


def engine_options(options: WorkerOptions) -> dict[str, Any]:
    """What the engine process is told of ``options`` (its command line's JSON)."""
    return {k: getattr(options, k) for k in WorkerOptions.__slots__ if k != "start_timeout"}


def engine_command(model_dir: str, options: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of an engine process for ``model_dir``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return [sys.executable, "-m", "minigate.providers.onnx.engine", model_dir, json.dumps(options)], env


@dataclass(slots=True)
class Piece:
    """A bit of generated text: ``tokens`` new tokens, and ``finish`` when the sequence ended
    (``error``: the engine failed on it, and ``text`` says how)."""

    text: str
    tokens: int
    finish: str | None


class Generation:
    """One request's stream of :class:`Piece` from the worker; ``aclose`` cancels it if still running."""

    def __init__(self, client: WorkerClient, rid: int) -> None:
        self.client = client
        self.id = rid
        self.queue: asyncio.Queue[Piece | BaseException] = asyncio.Queue()
        self.prompt_tokens = 0
        self.max_tokens = 0
        self.finished = False
        self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def next(self, wait: float | None = None) -> Piece:
        """The next piece (raises the worker's failure, or TimeoutError after ``wait`` seconds)."""
        if not self.queue.empty():
            item = self.queue.get_nowait()
        else:
            async with asyncio.timeout(wait):
                item = await self.queue.get()
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        if item.finish == "error":
            self.finished = True
            raise ProviderError(f"the local engine failed: {item.text}", status=500, code="engine_error")
        if item.finish is not None:
            self.finished = True
        return item

    async def aclose(self) -> None:
        """Stop the sequence in the worker unless it has finished."""
        if not self.finished:
            self.finished = True
            await self.client.cancel(self.id)
        self.client.forget(self.id)


@dataclass(slots=True)
class _Stats:
    started: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    durations: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=32))


class WorkerClient:
    """One worker process serving one model folder."""

    def __init__(self, model: str, model_dir: Path, options: WorkerOptions) -> None:
        self.model = model
        self.model_dir = model_dir
        self.options = options
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}
        self.inflight: dict[int, Generation] = {}
        self.started_at: dict[int, float] = {}
        self.draining = False
        self.dead: str | None = None
        self.serial = next(_workers)  # names this worker's crash, even after its pid is reused
        self.stats = _Stats()
        self.cache_stats: dict[str, Any] = {}  # the prefix cache's counters, as the worker last sent them
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._tasks: list[asyncio.Task[None]] = []
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._outbox: list[bytes] = []
        self.idle = asyncio.Event()
        self.idle.set()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the process and wait until the model is loaded (raises ProviderError if it cannot be)."""
        argv, env = engine_command(str(self.model_dir), engine_options(self.options))
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 20,
        )
        self._tasks.append(asyncio.create_task(self._read_stderr()))
        try:
            assert self.proc.stdout is not None
            first = await asyncio.wait_for(read_frame(self.proc.stdout), self.options.start_timeout)
        except (asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            await self.kill()
            await asyncio.sleep(0)
            raise UpstreamUnavailable(f"worker for {self.model} did not start: {self.stderr_tail() or exc!r}") from exc
        if first.get("ev") != "ready":
            await self.kill()
            raise ProviderError(
                f"model {self.model} cannot be loaded: {first.get('message')}", status=500, code="model_load_failed"
            )
        self.ready = first
        self._tasks.append(asyncio.create_task(self._read_events()))

    @property
    def pid(self) -> int | None:
        """The worker's process id."""
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        """True while the process runs and has not been declared dead."""
        return self.proc is not None and self.proc.returncode is None and self.dead is None

    @property
    def context_length(self) -> int:
        """Longest prompt + completion the worker accepts."""
        return int(self.ready.get("context_length") or self.options.max_context)

    def died(self, message: str, code: str = "worker_dead") -> UpstreamUnavailable:
        """The error of a request this worker failed by dying: every one names the same crash as its cause."""
        error = UpstreamUnavailable(
            message, code=code, cause=f"{self.model} worker #{self.serial} (pid {self.pid}) died"
        )
        # Replaced already (a hot swap, an unload): its crash says nothing about the worker now serving the model.
        error.cooldown = not self.draining
        return error

    def stderr_tail(self) -> str:
        """The last lines the worker wrote to stderr."""
        return " | ".join(self._stderr)

    def rss_bytes(self) -> int:
        """Resident memory of the worker process (0 if unknown)."""
        try:
            with open(f"/proc/{self.pid}/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    async def stop(self, grace: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``grace`` seconds."""
        if self.proc is None or self.proc.returncode is not None:
            await self._finish_tasks()
            return
        with contextlib.suppress(Exception):
            await self._send(self.shutdown_frame())
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            await self.kill()
        await self._finish_tasks()

    def shutdown_frame(self) -> dict[str, Any]:
        """What :meth:`stop` sends before it waits for the process to exit."""
        return {"op": "shutdown"}

    async def kill(self) -> None:
        """Kill the process at once."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    async def _finish_tasks(self) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------ requests
    async def submit(self, message: GenRequest) -> Generation:
        """Send a ``gen`` request; return its Generation once the worker accepted it (or raise its error)."""
        if not self.alive:
            raise self.died(f"worker for {self.model} is not running")
        limit = self.options.max_batch_size + self.options.queue_size
        if len(self.inflight) >= limit:
            raise ProviderError(
                f"model {self.model} is busy: {len(self.inflight)} requests running or queued (limit {limit})",
                status=429,
                type="rate_limit_error",
                code="queue_full",
                retry_after=self.retry_after(),
                cooldown=False,
            )
        rid = next(_ids)
        generation = Generation(self, rid)
        self.inflight[rid] = generation
        self.idle.clear()
        self.started_at[rid] = time.monotonic()
        self.stats.last_used = time.monotonic()
        try:
            await self._send({**message, "op": "gen", "id": rid})
            await generation.accepted
        except BaseException:
            self.forget(rid)
            raise
        return generation

    def retry_after(self) -> float:
        """Seconds a refused client should wait: about one recent request's duration."""
        recent = self.stats.durations
        return round(max(1.0, sum(recent) / len(recent)) if recent else 1.0, 1)

    async def cancel(self, rid: int) -> None:
        """Tell the worker to stop sequence ``rid``."""
        if self.alive:
            with contextlib.suppress(Exception):
                await self._send({"op": "cancel", "id": rid})

    def forget(self, rid: int) -> None:
        """Drop a finished or abandoned request from the books."""
        if self.inflight.pop(rid, None) is not None:
            started = self.started_at.pop(rid, None)
            if started is not None:
                self.stats.durations.append(time.monotonic() - started)
        if not self.inflight:
            self.idle.set()
        self.stats.last_used = time.monotonic()

    async def worker_stats(self, wait: float = 5.0) -> dict[str, Any]:
        """The worker's own counters (active, queued, generated, cancelled, batches...)."""
        rid = next(_ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        try:
            await self._send({"op": "stats", "id": rid})
            return await asyncio.wait_for(future, wait)
        finally:
            self._replies.pop(rid, None)

    async def _send(self, message: dict[str, Any]) -> None:
        """Queue a message for the worker. Messages queued in one event-loop turn go out in one write, so
        requests sent together reach the worker together and start in one batch."""
        stdin = self.proc.stdin if self.proc is not None else None
        if stdin is None or stdin.is_closing() or self.dead is not None:
            raise self.died(f"worker for {self.model} is not running")
        self._outbox.append(encode_frame(message))
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        data = b"".join(self._outbox)
        self._outbox.clear()
        stdin = self.proc.stdin if self.proc is not None else None
        if stdin is not None and not stdin.is_closing():
            # A dead worker's pipe fails quietly here; the event reader sees the EOF and fails its requests.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                stdin.write(data)

    # ------------------------------------------------------------ readers
    async def _read_events(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        reason = "closed its pipe"
        try:
            while True:
                message = await read_frame(self.proc.stdout)
                self._dispatch(message)
        except asyncio.IncompleteReadError:
            pass
        except Exception as exc:  # a corrupt frame: the worker cannot be trusted any more
            reason = f"sent a bad frame ({exc})"
            await self.kill()
        code = await self.proc.wait() if self.proc.returncode is None else self.proc.returncode
        await asyncio.sleep(0.05)  # let the stderr reader catch the last words
        self._fail_all(f"worker for {self.model} {reason} (exit code {code}) {self.stderr_tail()}".strip())

    def _fail_all(self, why: str) -> None:
        self.dead = why
        self.idle.set()
        for generation in list(self.inflight.values()):
            error = self.died(why, "worker_died")
            if not generation.accepted.done():
                generation.accepted.set_exception(error)
            generation.queue.put_nowait(error)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(self.died(why, "worker_died"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        ev = message.get("ev")
        if ev == "tokens":
            if message.get("cache"):
                self.cache_stats = message["cache"]
            for rid, text, ntok, finish in message["items"]:
                generation = self.inflight.get(rid)
                if generation is not None:
                    generation.queue.put_nowait(Piece(text, ntok, finish))
        elif ev == "accepted":
            generation = self.inflight.get(message["id"])
            if generation is not None and not generation.accepted.done():
                generation.prompt_tokens = int(message["prompt_tokens"])
                generation.max_tokens = int(message["max_tokens"])
                generation.accepted.set_result(None)
        elif ev == "error":
            generation = self.inflight.get(message["id"])
            if generation is not None and not generation.accepted.done():
                status = int(message.get("status") or 500)
                code = message.get("code")
                error = ProviderError(
                    str(message.get("message")),
                    status=status,
                    code=code,
                    type="rate_limit_error" if status == 429 else "invalid_request_error",
                    fallback=bool(message.get("fallback")),
                    cooldown=False,
                    retry_after=self.retry_after() if status == 429 else None,
                    param=_PARAMS.get(str(code)),
                )
                generation.finished = True
                generation.accepted.set_exception(error)
        elif ev == "stats":
            if "prefix_hits" in message:
                self.cache_stats = {
                    k: v for k, v in message.items() if k.startswith("prefix_") or k == "prefilled_tokens"
                }
            future = self._replies.get(message.get("id") or 0)
            if future is not None and not future.done():
                future.set_result(message)

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr.append(text[:500])

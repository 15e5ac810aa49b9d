"""One engine process per model for every gateway process of ``minigate serve --workers N``.

The supervisor runs an :class:`EngineHost` on a unix socket in its private runtime folder (0700). A gateway
process's onnx provider opens one connection per model it uses (:mod:`minigate.providers.onnx.engine_link`),
sends ``attach`` with the model folder and the engine options, then speaks the engine's own frames. The host
renumbers request ids, so one engine serves every connection and batches their sequences together.

An engine starts on its first ``attach`` and stops when its last connection leaves (each process leaves after its
own idle TTL, or on ``shutdown``). ``fresh`` (a hot swap) starts a new engine and tells the old one's connections
``retired``; ``shutdown`` with ``everywhere`` (an unload) does the same without a successor. When an engine dies,
its connections get ``exit`` (code and stderr tail) and are closed, so every process fails its calls and starts
a new engine on its next request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

from minigate.providers.onnx.protocol import encode_frame, read_frame
from minigate.providers.onnx.worker import engine_command

__all__ = ["EngineHost"]

log = logging.getLogger("minigate")

ATTACH_TIMEOUT = 10.0  # seconds a new connection has to say which model it wants


class _Outbox:
    """Frames queued in one event-loop turn, written in one go (sequences sent together start in one batch)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self._frames: list[bytes] = []

    def send(self, message: dict[str, Any]) -> None:
        self._frames.append(encode_frame(message))
        if len(self._frames) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        data = b"".join(self._frames)
        self._frames.clear()
        if self.writer is not None and not self.writer.is_closing():
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                self.writer.write(data)


class _Link(_Outbox):
    """One gateway process's connection for one model: its request ids and the engine's for them."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self.ids: dict[int, int] = {}  # this connection's request id -> the engine's

    def close(self) -> None:
        self._flush()
        self.writer.close()


class _Engine(_Outbox):
    """One engine process and the connections it serves."""

    def __init__(self, key: str, proc: asyncio.subprocess.Process) -> None:
        super().__init__(proc.stdin)
        self.key, self.proc = key, proc
        self.ready: dict[str, Any] = {}
        self.links: set[_Link] = set()
        self.routes: dict[int, tuple[_Link, int]] = {}  # the engine's request id -> (connection, its id)
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        self.tasks: list[asyncio.Task[None]] = []

    def tail(self) -> str:
        return " | ".join(self.stderr)


class EngineHost:
    """Serves ``path`` (a unix socket); see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._engines: dict[str, _Engine] = {}  # the current engine per (model folder, options)
        self._all: set[_Engine] = set()  # current and retired ones still serving
        self._locks: dict[str, asyncio.Lock] = {}
        self._ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._stopping: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        """Listen on the socket (readable by this user only)."""
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=1 << 20)
        os.chmod(self.path, 0o600)

    def pids(self) -> list[int]:
        """The engine processes running now."""
        return sorted(e.proc.pid for e in self._all if e.proc.returncode is None)

    async def close(self) -> None:
        """Stop listening and stop every engine."""
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(self._stop(e) for e in list(self._all)), return_exceptions=True)

    # ------------------------------------------------------------ connections
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        engine: _Engine | None = None
        try:
            hello = await asyncio.wait_for(read_frame(reader), ATTACH_TIMEOUT)
            engine = await self._attach(link, hello)
            if engine is None:
                return
            while True:
                message = await read_frame(reader)
                if message.get("op") == "shutdown":
                    if message.get("everywhere"):
                        self._retire(engine)
                    return
                self._forward(engine, link, message)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError, KeyError, TypeError):
            return
        finally:
            if engine is not None:
                await self._detach(engine, link)
            link.close()

    def _forward(self, engine: _Engine, link: _Link, message: dict[str, Any]) -> None:
        rid = int(message["id"])
        if message.get("op") == "cancel":
            gid = link.ids.pop(rid, None)
            if gid is None:
                return
            engine.routes.pop(gid, None)
        else:
            gid = next(self._ids)
            link.ids[rid] = gid
            engine.routes[gid] = (link, rid)
        engine.send({**message, "id": gid})

    async def _attach(self, link: _Link, hello: dict[str, Any]) -> _Engine | None:
        model_dir, options = str(hello["model_dir"]), dict(hello["options"])
        key = json.dumps([model_dir, options], sort_keys=True)
        async with self._locks.setdefault(key, asyncio.Lock()):
            engine = self._engines.get(key)
            if engine is not None and (hello.get("fresh") or engine.proc.returncode is not None):
                self._retire(engine)
                engine = None
            if engine is None:
                engine, refusal = await self._start(key, model_dir, options, float(hello.get("start_timeout") or 120))
                if engine is None:
                    link.send(refusal)
                    return None
                self._engines[key] = engine
            engine.links.add(link)
            link.send({**engine.ready, "pid": engine.proc.pid})
            return engine

    async def _start(
        self, key: str, model_dir: str, options: dict[str, Any], wait: float
    ) -> tuple[_Engine | None, dict[str, Any]]:
        argv, env = engine_command(model_dir, options)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 20,
        )
        engine = _Engine(key, proc)
        engine.tasks.append(asyncio.create_task(self._read_stderr(engine)))
        assert proc.stdout is not None
        try:
            first = await asyncio.wait_for(read_frame(proc.stdout), wait)
        except (asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            await self._kill(engine)
            return None, {"ev": "unavailable", "message": engine.tail() or repr(exc)}
        if first.get("ev") != "ready":
            await self._kill(engine)
            return None, first
        engine.ready = first
        self._all.add(engine)
        engine.tasks.append(asyncio.create_task(self._pump(engine)))
        log.info("engine for %s started (pid %s)", Path(model_dir).name, proc.pid)
        return engine, first

    def _retire(self, engine: _Engine) -> None:
        """New connections get another engine; the connections of this one are told, and it stops when the
        last one leaves."""
        if self._engines.get(engine.key) is engine:
            del self._engines[engine.key]
        for link in engine.links:
            link.send({"ev": "retired"})
        if not engine.links:
            task = asyncio.ensure_future(self._stop(engine))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _detach(self, engine: _Engine, link: _Link) -> None:
        engine.links.discard(link)
        for gid in link.ids.values():  # what this connection still had running ends here
            if engine.routes.pop(gid, None) is not None and engine.proc.returncode is None:
                engine.send({"op": "cancel", "id": gid})
        link.ids.clear()
        async with self._locks.setdefault(engine.key, asyncio.Lock()):
            if not engine.links:
                if self._engines.get(engine.key) is engine:
                    del self._engines[engine.key]
                await self._stop(engine)

    async def _stop(self, engine: _Engine, grace: float = 5.0) -> None:
        if engine.proc.returncode is None:
            engine.send({"op": "shutdown"})
            try:
                await asyncio.wait_for(engine.proc.wait(), grace)
            except TimeoutError:
                await self._kill(engine)
        self._all.discard(engine)

    async def _kill(self, engine: _Engine) -> None:
        with contextlib.suppress(ProcessLookupError):
            engine.proc.kill()
        await engine.proc.wait()
        for task in engine.tasks:
            task.cancel()

    # ------------------------------------------------------------ the engine's events
    async def _pump(self, engine: _Engine) -> None:
        """Route each event to the connection whose request it answers, in that connection's numbering."""
        assert engine.proc.stdout is not None
        try:
            while True:
                message = await read_frame(engine.proc.stdout)
                if message.get("ev") == "tokens":
                    self._tokens(engine, message["items"], message.get("cache"))
                    continue
                route = engine.routes.get(message.get("id") or 0)
                if route is None:
                    continue
                link, rid = route
                if message.get("ev") in ("error", "stats"):
                    engine.routes.pop(message["id"], None)
                    link.ids.pop(rid, None)
                link.send({**message, "id": rid})
        except asyncio.IncompleteReadError:
            pass
        except Exception:  # a corrupt frame: this engine cannot be trusted any more
            log.exception("engine pid %s sent a bad frame", engine.proc.pid)
            with contextlib.suppress(ProcessLookupError):
                engine.proc.kill()
        code = await engine.proc.wait()
        await asyncio.sleep(0.05)  # the stderr reader's last lines
        self._all.discard(engine)
        if self._engines.get(engine.key) is engine:
            del self._engines[engine.key]
        if engine.links:
            log.warning(
                "engine pid %s exited (code %s) serving %d connections", engine.proc.pid, code, len(engine.links)
            )
        for link in list(engine.links):
            link.send({"ev": "exit", "code": code, "message": engine.tail()})
            link.close()

    def _tokens(self, engine: _Engine, items: list[Any], cache: dict[str, Any] | None = None) -> None:
        """Each connection's items, in its numbering; the prefix cache's counters (the engine's, sent when they
        changed) go to every connection."""
        per: dict[_Link, list[Any]] = {link: [] for link in engine.links} if cache else {}
        for item in items:
            route = engine.routes.get(item[0])
            if route is None:
                continue
            link, rid = route
            if item[3] is not None:  # finished
                del engine.routes[item[0]]
                link.ids.pop(rid, None)
            per.setdefault(link, []).append([rid, *item[1:]])
        for link, mine in per.items():
            link.send({"ev": "tokens", "items": mine, **({"cache": cache} if cache else {})})

    async def _read_stderr(self, engine: _Engine) -> None:
        assert engine.proc.stderr is not None
        while line := await engine.proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                engine.stderr.append(text[:500])

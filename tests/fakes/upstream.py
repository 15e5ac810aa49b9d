"""A small, real OpenAI-compatible HTTP server (aiohttp) used as the upstream in tests and benchmarks.

It only ever listens on 127.0.0.1. Run it from a background thread (``start()``/``stop()`` or ``with``),
in the running event loop (``astart()``/``aclose()``/``serve()``), or standalone for load tests::

    python -m tests.fakes.upstream --port 9100 --chunks 64 --interval 0.05

What it can be scripted to do is :mod:`tests.fakes.behaviours`; the bytes of its answers are :mod:`tests.fakes.wire`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from typing import Any

from aiohttp import web

from tests.fakes import behaviours, toolcalls, wire
from tests.fakes.behaviours import (
    Custom,
    Delay,
    EndAfter,
    MalformedSSE,
    NoDone,
    Recorded,
    Reply,
    ResetAfter,
    StallAfter,
    Status,
    StreamError,
    ToolCalls,
)

__all__ = ["FakeUpstream", *behaviours.__all__]  # the behaviours are scripted through this module

HOST = "127.0.0.1"


class FakeUpstream:
    """An OpenAI-compatible server on 127.0.0.1 with scripted faults and request recording.

    ``script()`` queues behaviours (FIFO, per model or global), ``set_default()`` sets the answer when
    nothing is queued. ``GET /v1/models`` lists ``name`` and only checks the API key. ``record=False``
    turns recording off (benchmarks)."""

    def __init__(self, name: str = "fake", *, api_key: str | None = None, record: bool = True) -> None:
        self.name, self.api_key, self.record = name, api_key, record
        self._auth = f"Bearer {api_key}" if api_key else None
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._global: deque[Any] = deque()
        self._per_model: dict[str, deque[Any]] = {}
        self._default: Any = Reply()
        self._disconnect = threading.Event()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL including ``/v1``."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of the recorded requests (items are live: ``disconnected`` may still change)."""
        with self._lock:
            return list(self._requests)

    def script(self, *behaviours: Any, model: str | None = None) -> None:
        """Queue behaviours for the next requests (of ``model`` if given, else of any model)."""
        with self._lock:
            (self._per_model.setdefault(model, deque()) if model else self._global).extend(behaviours)

    def set_default(self, behaviour: Any) -> None:
        """Use ``behaviour`` whenever no scripted behaviour is queued."""
        self._default = behaviour

    def reset(self) -> None:
        """Forget recorded requests, queued scripts, the disconnect flag and the default behaviour."""
        with self._lock:
            self._requests.clear()
            self._global.clear()
            self._per_model.clear()
        self._default = Reply()
        self._disconnect.clear()

    def wait_for_disconnect(self, timeout: float = 2.0) -> bool:
        """True once a client went away mid-response since the last ``reset()``; waits up to ``timeout``."""
        return self._disconnect.wait(timeout)

    def _pop(self, model: Any) -> Any:
        with self._lock:
            queue = self._per_model.get(model) if isinstance(model, str) else None
            if queue:
                return queue.popleft()
            return self._global.popleft() if self._global else self._default

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            app.router.add_post(path, self._handle)
        app.router.add_get("/v1/models", self._handle)
        return app

    async def astart(self, host: str = HOST, port: int = 0) -> None:
        """Start serving in the running event loop (``port=0``: the OS picks one, see ``port``)."""
        if host != HOST:
            raise ValueError("FakeUpstream only listens on 127.0.0.1")
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.2)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=1024).start()
        self._runner, self.port = runner, runner.addresses[0][1]

    async def aclose(self) -> None:
        """Stop serving (after ``astart``)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve(self, host: str = HOST, port: int = 0) -> None:
        """Serve in the running event loop until cancelled."""
        await self.astart(host, port)
        try:
            await asyncio.Event().wait()
        finally:
            await self.aclose()

    def start(self) -> None:
        """Serve from a background thread with its own event loop; returns once listening."""
        ready, errors = threading.Event(), []
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            try:
                loop.run_until_complete(self.astart())
            except BaseException as exc:
                errors.append(exc)
            ready.set()
            if not errors:
                loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"FakeUpstream-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Stop the background server and join its thread."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.aclose(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = None
        if request.method == "POST":
            with contextlib.suppress(ValueError):
                body = json.loads(await request.read())
        rec = Recorded(request.path, request.method, {k.lower(): v for k, v in request.headers.items()}, body)
        if self.record:
            with self._lock:
                self._requests.append(rec)
        if self._auth and request.headers.get("Authorization") != self._auth:
            return wire.status(Status(401, {"message": "Invalid API key", "code": "invalid_api_key"}))
        if request.path == "/v1/models":
            model = {"id": self.name, "object": "model", "created": 0, "owned_by": "fake"}
            return web.Response(body=wire.dumps({"object": "list", "data": [model]}), content_type=wire.JSON)
        if not isinstance(body, dict):
            return wire.status(Status(400, {"message": "the body must be a JSON object"}))
        try:
            return await self._respond(request, body, self._pop(body.get("model")))
        except (asyncio.CancelledError, ConnectionResetError):
            rec.disconnected = True
            self._disconnect.set()
            raise

    async def _respond(self, request: web.Request, body: dict[str, Any], b: Any) -> web.StreamResponse:
        while isinstance(b, Delay):
            await asyncio.sleep(b.seconds)
            b = Reply() if b.then is None else b.then
        if isinstance(b, Status):
            return wire.status(b)
        if isinstance(b, Custom):
            response: web.StreamResponse = await b.respond(request, body)
            return response
        if isinstance(b, ToolCalls):
            return await toolcalls.respond(request, body, b)
        stream = bool(body.get("stream")) and request.path != "/v1/embeddings"
        if isinstance(b, ResetAfter) and (not stream or b.chunks <= 0):
            return _abort(request)
        if not stream:
            if isinstance(b, MalformedSSE):
                return web.Response(body=b"{not json", content_type=wire.JSON)
            if isinstance(b, EndAfter):
                whole = wire.completion(True, body.get("model"), "Hello", Reply(), {}).body
                assert isinstance(whole, bytes)
                return web.Response(body=whole[: len(whole) // 2], content_type=wire.JSON)
            if isinstance(b, StreamError):
                return wire.status(Status(500, b.error))
            if isinstance(b, StallAfter):
                await asyncio.sleep(b.seconds)
            if request.path == "/v1/embeddings":
                return wire.embeddings(body)
        reply = b if isinstance(b, Reply) else self._default if isinstance(self._default, Reply) else Reply()
        content = reply.content
        if content is None:
            content = f"Hello from {self.name}" if reply.chunks is None else wire.toks(reply.chunks)
        words = wire.words(content)
        if not isinstance(b, Reply):  # fault streams: pad with " tokN" words so there is enough to send
            words = wire.padded(words, b.chunks + isinstance(b, StallAfter))
        chat = request.path == "/v1/chat/completions"
        prompt = wire.count_words(body.get("messages") if chat else body.get("prompt"))
        usage = {"prompt_tokens": prompt, "completion_tokens": len(words)}
        usage["total_tokens"] = prompt + len(words)
        if not stream:
            return wire.completion(chat, body.get("model"), content, reply, usage)
        s = wire.Stream(chat, body.get("model"), reply.extra, int(time.time()))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        out = [s.role()] if chat else []  # frames are sent together until the next pause
        limit = len(words) if isinstance(b, (Reply, StallAfter)) else b.chunks
        stall_at, stall = (b.chunks, b.seconds) if isinstance(b, StallAfter) else (-1, 0.0)
        for i, word in enumerate(words[:limit]):
            pause = (reply.interval if i else 0.0) + (stall if i == stall_at else 0.0)
            if pause:
                if out:
                    await resp.write(b"".join(out))
                out.clear()
                await asyncio.sleep(pause)
            if reply.stamp:  # taken as late as possible: the word is written before the next pause
                word = word[:-1] + b"@%d" % time.time_ns() + word[-1:]
            out.append(s.word(word))
        if isinstance(b, ResetAfter):
            await resp.write(b"".join(out))
            return _abort(request)
        if isinstance(b, MalformedSSE):
            out.append(b"data: {not json\n\n" + wire.DONE)
        elif isinstance(b, StreamError):
            out.append(b"data: " + wire.dumps(wire.error_body(500, b.error)) + b"\n\n")
        elif isinstance(b, EndAfter):
            pass  # no finish chunk, no usage, no [DONE]: the body just ends
        else:
            out.append(s.finish(reply.finish_reason))
            include = (body.get("stream_options") or {}).get("include_usage")
            if reply.usage or (reply.usage is None and include):
                out.append(s.usage(usage))
            if not isinstance(b, NoDone):
                out.append(wire.DONE)
        await resp.write(b"".join(out))
        await resp.write_eof()
        return resp


def _abort(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # SO_LINGER 0: the close sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response()  # never sent: aiohttp drops it quietly on the closed transport


def main(argv: list[str] | None = None) -> None:
    """Run a standalone fake upstream (recording off) until interrupted."""
    p = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream on 127.0.0.1.")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--name", default="fake")
    p.add_argument("--api-key", default=None)
    p.add_argument("--chunks", type=int, default=None, help="words per answer (tok0 tok1 ...)")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between stream chunks")
    p.add_argument("--stamp", action="store_true", help="append @<time.time_ns()> to each streamed word")
    args = p.parse_args(argv)
    fake = FakeUpstream(args.name, api_key=args.api_key, record=False)
    fake.set_default(Reply(chunks=args.chunks, interval=args.interval, stamp=args.stamp))
    print(f"fake upstream on http://{HOST}:{args.port}/v1", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fake.serve(HOST, args.port))


if __name__ == "__main__":
    main()

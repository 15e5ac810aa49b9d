"""Hostile upstream answers for the fake upstream: each is a :class:`~tests.fakes.behaviours.Custom` behaviour
(``fake.script(hostile.<name>(...))``) that breaks the rules a well-behaved OpenAI-compatible server keeps:
huge or negative numbers, endless or flooding streams, giant lines, compression bombs, slow or giant errors."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from tests.fakes import wire
from tests.fakes.behaviours import Custom, Reply

__all__ = [
    "Tally",
    "big_answer",
    "flood",
    "giant_error",
    "gzip_bomb",
    "huge_line",
    "shaped",
    "sse_response",
    "usage_answer",
]


async def sse_response(request: web.Request, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    """A prepared ``text/event-stream`` response to write hostile frames into."""
    response = web.StreamResponse(
        status=status, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})}
    )
    await response.prepare(request)
    return response


_ = Custom  # the behaviour every function here returns


@dataclass
class Tally:
    """What a hostile answer wrote: ``sent`` bytes accepted by the socket (compressed ones for a bomb), and
    ``done`` once all of them were. A reader that stops at a cap leaves ``done`` False and ``sent`` small."""

    sent: int = 0
    done: bool = False


_PIECE = 64 * 1024
_CHUNK_HEAD = b'data: {"object":"chat.completion.chunk","model":"hostile","choices":[{"index":0,"delta":{"content":'
_CHUNK_TAIL = b'},"finish_reason":null}]}\n\n'
_FINISH = b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
_DONE = b"data: [DONE]\n\n"
_BOMBS = {  # what a gzip bomb decompresses to: head, ``size`` times "a", tail
    "json": (
        200,
        "application/json",
        b'{"object":"chat.completion","model":"hostile","choices":[{"index":0,"message":{"role":"assistant",'
        b'"content":"',
        b'"},"finish_reason":"stop"}]}',
    ),
    "error": (500, "application/json", b'{"error":{"message":"', b'","type":"server_error"}}'),
    "sse": (200, "text/event-stream", _CHUNK_HEAD + b'"', b'"' + _CHUNK_TAIL + _FINISH + _DONE),
}


def _filled(head: bytes, size: int, tail: bytes) -> Iterator[bytes]:
    """``head``, ``size`` times "a" and ``tail`` in 64 KiB pieces, never held whole."""
    yield head
    run = b"a" * _PIECE
    for start in range(0, size, _PIECE):
        yield run[: min(_PIECE, size - start)]
    yield tail


def _gzipped(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """``pieces`` gzip-compressed as they come (what is yielded is compressed; 1 GB of "a" is about 1 MB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = b""
    for piece in pieces:
        out += z.compress(piece)
        if len(out) >= 16 * 1024:
            yield out
            out = b""
    yield out + z.flush()


async def _send(
    request: web.Request,
    status: int,
    content_type: str,
    pieces: Iterator[bytes],
    tally: Tally | None,
    *,
    gzip: bool = False,
    interval: float = 0.0,
) -> web.StreamResponse:
    headers = {"Content-Type": content_type, **({"Content-Encoding": "gzip"} if gzip else {})}
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    tally = tally if tally is not None else Tally()
    for piece in _gzipped(pieces) if gzip else pieces:
        await response.write(piece)  # waits while the socket's buffers are full: a reader that stops stops it
        tally.sent += len(piece)
        if interval:
            await asyncio.sleep(interval)
    await response.write_eof()
    tally.done = True
    return response


def huge_line(size: int, tally: Tally | None = None) -> Custom:
    """A stream whose first event is one line of ``size`` bytes of content (then a proper end)."""

    async def respond(request: web.Request, body: Any) -> web.StreamResponse:
        head, tail = _BOMBS["sse"][2:]
        return await _send(request, 200, "text/event-stream", _filled(head, size, tail), tally)

    return Custom(respond)


def flood(chunks: int = 1_000_000, tally: Tally | None = None, *, gzip: bool = False) -> Custom:
    """``chunks`` one-letter content chunks in a single write (about 90 bytes each), then a proper end."""

    async def respond(request: web.Request, body: Any) -> web.StreamResponse:
        frames = iter([_CHUNK_HEAD + b'"x"' + _CHUNK_TAIL] * chunks + [_FINISH + _DONE])
        whole = iter([b"".join(frames)]) if not gzip else frames
        return await _send(request, 200, "text/event-stream", whole, tally, gzip=gzip)

    return Custom(respond)


def gzip_bomb(kind: Literal["json", "error", "sse"], size: int, tally: Tally | None = None) -> Custom:
    """``Content-Encoding: gzip``: about ``size / 1000`` bytes on the wire that decompress to ``size``. ``json``
    is a chat answer with ``size`` bytes of content, ``error`` a 500 with a ``size``-byte message, ``sse`` a
    stream whose first event is a ``size``-byte line."""

    async def respond(request: web.Request, body: Any) -> web.StreamResponse:
        status, content_type, head, tail = _BOMBS[kind]
        return await _send(request, status, content_type, _filled(head, size, tail), tally, gzip=True)

    return Custom(respond)


def giant_error(size: int, tally: Tally | None = None, *, interval: float = 0.0) -> Custom:
    """A 500 whose JSON error message is ``size`` bytes; ``interval`` s between its 64 KiB pieces (a slow error)."""

    async def respond(request: web.Request, body: Any) -> web.StreamResponse:
        head, tail = _BOMBS["error"][2:]
        return await _send(request, 500, "application/json", _filled(head, size, tail), tally, interval=interval)

    return Custom(respond)


def usage_answer(usage: Any) -> Custom:
    """A chat answer ("Hello", as JSON or streamed, as the request asks) whose ``usage`` is ``usage`` as given:
    counts that are huge (10**30, 2**63-1), negative, booleans, strings or floats. Streamed, it is the last
    chunk before ``[DONE]``, as with ``stream_options.include_usage``."""

    async def respond(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = body.get("model")
        if not body.get("stream"):
            return wire.completion(True, model, "Hello", Reply(), usage)
        frames = wire.Stream(True, model, None, int(time.time()))
        response: web.StreamResponse = await sse_response(request)
        await response.write(
            frames.role() + frames.word(wire.dumps("Hello")) + frames.finish("stop") + frames.usage(usage) + wire.DONE
        )
        return response

    return Custom(respond)


def big_answer(size: int, tally: Tally | None = None) -> Custom:
    """A JSON chat answer whose content is ``size`` bytes of "a", written as fast as the reader takes it (to fill
    the gateway's buffers towards a client that does not read)."""

    async def respond(request: web.Request, body: Any) -> web.StreamResponse:
        head, tail = _BOMBS["json"][2:]
        return await _send(request, 200, "application/json", _filled(head, size, tail), tally)

    return Custom(respond)


def shaped(answer: Any, chunks: list[Any]) -> Custom:
    """An answer of any shape: ``answer`` as the JSON body of a plain request, ``chunks`` as the ``data:`` events
    of a streamed one (each JSON-encoded, then ``[DONE]``): choices that are strings, deltas that are lists,
    content that is a number."""

    async def respond(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if not body.get("stream"):
            return web.Response(body=wire.dumps(answer), content_type=wire.JSON)
        response: web.StreamResponse = await sse_response(request)
        await response.write(b"".join(b"data: " + wire.dumps(chunk) + b"\n\n" for chunk in chunks) + wire.DONE)
        return response

    return Custom(respond)

"""Hostile upstream answers for the fake upstream: each is a :class:`~tests.fakes.behaviours.Custom` behaviour
(``fake.script(hostile.<name>(...))``) that breaks the rules a well-behaved OpenAI-compatible server keeps:
huge or negative numbers, endless or flooding streams, giant lines, compression bombs, slow or giant errors."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from tests.fakes import wire
from tests.fakes.behaviours import Custom, Reply

__all__ = ["sse_response", "usage_answer"]


async def sse_response(request: web.Request, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    """A prepared ``text/event-stream`` response to write hostile frames into."""
    response = web.StreamResponse(
        status=status, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})}
    )
    await response.prepare(request)
    return response


_ = Custom  # the behaviour every function here returns


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

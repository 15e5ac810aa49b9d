"""Hostile upstream answers for the fake upstream: each is a :class:`~tests.fakes.behaviours.Custom` behaviour
(``fake.script(hostile.<name>(...))``) that breaks the rules a well-behaved OpenAI-compatible server keeps:
huge or negative numbers, endless or flooding streams, giant lines, compression bombs, slow or giant errors."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.behaviours import Custom

__all__ = ["sse_response"]


async def sse_response(request: web.Request, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    """A prepared ``text/event-stream`` response to write hostile frames into."""
    response = web.StreamResponse(
        status=status, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})}
    )
    await response.prepare(request)
    return response


_ = Custom  # the behaviour every function here returns

"""The remote provider's caps, checked on the provider itself against the hostile fake upstream on 127.0.0.1:
memory stays bounded by the caps however much a gzip bomb decompresses to (measured with tracemalloc, in
bytes), a stream whose bytes are all buffered already still lets the event loop run, and an upstream's error
is cut only after its credentials are blanked out. End-to-end checks are in tests/test_hostile_upstream.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from minigate.providers.base import ProviderError, ProviderRequest, UpstreamStatusError, UpstreamTooLarge
from minigate.providers.limits import UpstreamLimits
from minigate.providers.openai_compat import ApiAuth, ChatReader, OpenAIProvider, OpenAIProviderConfig
from minigate.providers.upstream import EventStream
from tests.fakes import hostile
from tests.fakes.behaviours import Custom
from tests.fakes.upstream import FakeUpstream
from tests.fakes.wire import dumps

MiB = 1024 * 1024
SMALL = UpstreamLimits(max_body_bytes=MiB, max_error_body_bytes=64 * 1024, max_sse_line_bytes=256 * 1024)


def request(stream: bool) -> ProviderRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return ProviderRequest("chat/completions", "m", body, stream, time.monotonic() + 60)


async def provider_for(upstream: FakeUpstream, limits: UpstreamLimits = SMALL) -> OpenAIProvider:
    auth = ApiAuth(type="api_key", value="primary-key")
    config = OpenAIProviderConfig(endpoint=upstream.url, auth=auth, limits=limits)
    provider = OpenAIProvider("primary", config)
    await provider.start()
    return provider


async def answer(provider: OpenAIProvider, stream: bool) -> list[dict[str, Any]]:
    """The answer's chunks (one body when not streamed); raises the provider's error."""
    if not stream:
        return [await provider.complete(request(False))]
    chunks = await provider.open_stream(request(True))
    try:
        return [chunk async for chunk in chunks]
    finally:
        await chunks.aclose()


@pytest.mark.parametrize(
    ("kind", "stream", "cap"),
    [
        ("json", False, "max_body_bytes (1048576)"),
        ("error", False, "max_error_body_bytes (65536)"),
        ("error", True, "max_error_body_bytes (65536)"),
        ("sse", True, "max_sse_line_bytes (262144)"),
    ],
)
async def test_a_gzip_bomb_costs_memory_up_to_the_cap_only(
    primary: FakeUpstream, kind: Any, stream: bool, cap: str
) -> None:
    # 256 KiB on the wire, 256 MiB decompressed: without caps the whole of it was held (and relayed).
    primary.script(hostile.gzip_bomb(kind, 256 * MiB))
    provider = await provider_for(primary)
    tracemalloc.start()
    try:
        with pytest.raises(UpstreamTooLarge) as info:
            await answer(provider, stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await provider.close()
    assert f"models.providers.primary.limits.{cap}" in info.value.message
    assert (info.value.status, info.value.code, info.value.fallback) == (502, "upstream_too_large", True)
    assert peak < 16 * MiB, f"{peak / MiB:.1f} MiB traced at the peak"


class _Buffered:
    """An answer body that is all here already: ``iter_any`` hands it out in pieces without ever suspending, as
    aiohttp's reader does while its buffer holds data."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def iter_any(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), 256 * 1024):
            yield self.data[start : start + 256 * 1024]

    def read_nowait(self) -> bytes:
        piece, self.data = self.data[: 256 * 1024], self.data[256 * 1024 :]
        return piece

    async def readany(self) -> bytes:
        return self.read_nowait()


class _Response:
    def __init__(self, data: bytes) -> None:
        self.content = _Buffered(data)

    def close(self) -> None:
        pass


async def test_a_buffered_flood_still_lets_the_event_loop_run() -> None:
    chunk = b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    chunks = 200_000
    response = _Response(chunk * chunks + finish)
    stream = EventStream(response, "primary", UpstreamLimits(), ChatReader("primary", lambda e: e))  # type: ignore[arg-type]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is waiting on the loop now
    ticks, relayed = 0, 0
    async for _ in stream:
        relayed += 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert relayed == chunks + 1
    # Nothing in the relay suspended before the parser yielded on its own: the ticker never ran then.
    assert ticks >= 1


async def test_an_upstream_error_is_cut_after_its_credentials_are_blanked(primary: FakeUpstream) -> None:
    # The key straddles the cut: cutting first would have passed its first characters on.
    message = "a" * 1995 + "primary-key" + "b" * 5000

    async def respond(request: web.Request, body: Any) -> web.Response:
        return web.json_response({"error": {"message": message, "type": "x" * 10_000}}, status=400)

    primary.script(Custom(respond))
    provider = await provider_for(primary)
    try:
        with pytest.raises(UpstreamStatusError) as info:
            await answer(provider, False)
    finally:
        await provider.close()
    error = info.value
    assert "prima" not in error.message and "[reda" in error.message
    assert len(error.message) < 2100 and error.message.endswith("more characters cut]")
    assert len(error.type) < 2100


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"error": {"message": "overloaded", "status": "not a number"}}, None),
        ({"error": {"message": "overloaded", "status": 10**30}}, None),
        ({"choices": 5}, "upstream_malformed"),
        ({"choices": ["not an object"]}, "upstream_malformed"),
    ],
)
async def test_hostile_events_are_provider_errors(primary: FakeUpstream, event: Any, code: str | None) -> None:
    async def respond(request: web.Request, body: Any) -> web.StreamResponse:
        response = await hostile.sse_response(request)
        await response.write(b"data: " + dumps(event) + b"\n\n")
        await response.write_eof()
        return response

    primary.script(Custom(respond))
    provider = await provider_for(primary)
    try:
        with pytest.raises(ProviderError) as info:
            await answer(provider, True)
    finally:
        await provider.close()
    assert info.value.status == 502 and (code is None or info.value.code == code), info.value

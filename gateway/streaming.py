"""Serving a streaming /v1 call: fall back until the first content chunk, then relay chunks as SSE.

Until a chunk with content is ready the chain can still move on to the next deployment; after that an upstream
failure ends the stream with an OpenAI-shaped error event, never a hang. The usage row is committed before
``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec

from gateway.chain import ChainExhausted, Hop, run_chain
from gateway.errors import error_body
from gateway.proxy import SHUTDOWN, Call, Served, cancelled, check_endpoint, failed, uncancel
from gateway.routing import Deployment
from gateway.tokens import checked_usage
from providers.base import ChunkStream, Provider, ProviderError

__all__ = ["serve_stream"]

_encode = msgspec.json.encode


def _has_content(chunk: dict[str, Any]) -> bool:
    if chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("finish_reason") or choice.get("text") or delta.get("content") or delta.get("tool_calls"):
            return True
        if delta.get("function_call") or delta.get("refusal") or delta.get("reasoning_content"):
            return True
    return False


async def _prime(stream: ChunkStream) -> tuple[AsyncIterator[dict[str, Any]], list[dict[str, Any]]]:
    """Read up to the first chunk with content: until then a failure can still fall back."""
    iterator = stream.__aiter__()
    buffered: list[dict[str, Any]] = []
    try:
        while True:
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                break
            buffered.append(chunk)
            if _has_content(chunk):
                break
    except BaseException:
        await stream.aclose()
        raise
    return iterator, buffered


def _event(payload: Any) -> bytes:
    return b"data: " + _encode(payload) + b"\n\n"


async def serve_stream(call: Call) -> Served:
    """Answer a streaming call; fallback is possible until the first content chunk is ready."""
    gateway = call.gateway
    hops: list[Hop] = []

    async def attempt(
        provider: Provider, deployment: Deployment
    ) -> tuple[ChunkStream, AsyncIterator[dict[str, Any]], list[dict[str, Any]]]:
        check_endpoint(provider, call, deployment)
        stream = await provider.open_stream(call.provider_request(deployment))
        iterator, buffered = await _prime(stream)
        return stream, iterator, buffered

    drain = gateway.drain
    drain.add(call)
    try:
        deployment, (stream, iterator, buffered), _ = await run_chain(
            call.route, call.providers, call.health, call.deadline, attempt, hops
        )
    except ChainExhausted as exhausted:
        drain.discard(call)
        raise await failed(call, exhausted.error, exhausted.hops) from None
    except asyncio.CancelledError:
        drain.discard(call)
        cut = await cancelled(call, hops)  # with the deployments that failed before
        if cut is None:
            raise
        raise cut from None
    # The call stays registered while the response machinery starts iterating the relay (in a task of its
    # own); no task is cancelled meanwhile: a cut in that moment is seen by the relay's first step.
    call.task = None
    ttft_ms = (time.monotonic() - call.started) * 1000
    return Served(
        call.headers(deployment, hops),
        stream=_relay(call, deployment, hops, stream, iterator, buffered, ttft_ms),
    )


async def _relay(
    call: Call,
    deployment: Deployment,
    hops: list[Hop],
    stream: ChunkStream,
    iterator: AsyncIterator[dict[str, Any]],
    buffered: list[dict[str, Any]],
    ttft_ms: float,
) -> AsyncIterator[bytes]:
    model = deployment.ref
    usage: Any = None
    status, error = 200, None
    call.task = asyncio.current_task()

    def event(chunk: dict[str, Any]) -> bytes | None:
        nonlocal usage
        if "usage" in chunk:
            usage = chunk["usage"] or usage  # stored as sent: Call.store checks and reports its counts
            chunk["usage"] = checked_usage(chunk["usage"])[0]  # the client is sent the counts that are stored
            if not call.client_usage:
                del chunk["usage"]
                if not chunk.get("choices"):
                    return None
        chunk["model"] = model
        if call.hooks is not None:
            chunk = call.hooks.chunk(call, deployment, chunk)
        return _event(chunk)

    try:
        if call.cut:
            raise asyncio.CancelledError()  # cut before the first step: end like any other cut stream
        async with asyncio.timeout(max(0.0, call.deadline - time.monotonic())):
            for chunk in buffered:
                if (data := event(chunk)) is not None:
                    yield data
            buffered.clear()
            async for chunk in iterator:
                if (data := event(chunk)) is not None:
                    yield data
    except ProviderError as err:
        status, error = (err.status if err.status >= 400 else 502), err.message
        call.health.failure(deployment.ref, err)
        yield _event(
            error_body(
                f"The upstream failed mid-stream: {err.message}",
                "upstream_error",
                None,
                err.code or "upstream_error",
            )
        )
    except TimeoutError:
        status, error = 504, "the request's deadline passed mid-stream"
        yield _event(error_body(f"The request timed out: {error}.", "timeout_error", None, "upstream_timeout"))
    except asyncio.CancelledError:
        status, error = (503, SHUTDOWN) if call.cut else (499, "client disconnected")
        if not call.cut:
            raise
        uncancel()  # a no-op when the cut came before the first step (nothing was cancelled then)
        yield _event(error_body(f"The answer was cut off: {SHUTDOWN}.", "server_error", None, "server_shutting_down"))
    except GeneratorExit:
        status, error = (503, SHUTDOWN) if call.cut else (499, "client disconnected")
        raise
    finally:
        call.gateway.drain.discard(call)
        with anyio.CancelScope(shield=True):
            await stream.aclose()
            await call.store(status, deployment, hops, error=error, ttft_ms=ttft_ms, usage=usage)
    if error is None:
        yield b"data: [DONE]\n\n"

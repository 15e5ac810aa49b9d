"""Serving a streaming /v1 call: fall back until the first content chunk, then relay chunks as SSE.

Until a chunk with content is ready the chain can still move on to the next deployment; after that an upstream
failure ends the stream with an OpenAI-shaped error event, never a hang. The usage row is committed before
``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
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
    relay = _relay(call, deployment, hops, stream, iterator, buffered, ttft_ms)
    # Run to its first yield: from here on closing the relay ends the upstream call and stores the row, even if
    # nobody ever iterates it (an unstarted generator's aclose runs none of its code).
    await anext(relay)
    return Served(call.headers(deployment, hops), stream=relay)


class _Deadline:
    """The call's deadline for the relay: it cancels the relay's task only while the relay waits on the upstream.

    While the relay is held at a ``yield`` (its consumer writes to the client) the deadline only marks itself
    expired, and the relay ends with a 504 once resumed; a write that does not end is bounded where it is made
    (``gateway.writes``). One timer per call: an ``asyncio.timeout`` around each chunk cost more than the chunk.
    """

    __slots__ = ("_base", "_handle", "_task", "cancelled", "expired", "waiting")

    def __init__(self, deadline: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task, self._base = task, task.cancelling()
        self.waiting = self.expired = self.cancelled = False
        delay = max(0.0, deadline - time.monotonic())
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self.expired = True
        if self.waiting:
            self.cancelled = True
            self._task.cancel()

    def took(self) -> bool:
        """Whether the cancellation being handled is the deadline's own (then taken back)."""
        if not self.cancelled:
            return False
        self.cancelled = False
        return self._task.uncancel() <= self._base

    def close(self) -> None:
        """Disarm."""
        self._handle.cancel()


async def _relay(
    call: Call,
    deployment: Deployment,
    hops: list[Hop],
    stream: ChunkStream,
    iterator: AsyncIterator[dict[str, Any]],
    buffered: list[dict[str, Any]],
    ttft_ms: float,
) -> AsyncGenerator[bytes, None]:
    model = deployment.ref
    usage: Any = None
    status, error = 200, None

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

    deadline: _Deadline | None = None
    try:
        yield b""  # taken by serve_stream: from here on the finally below runs however the relay ends
        call.task = asyncio.current_task()
        if call.cut:
            raise asyncio.CancelledError()  # cut before the first step: end like any other cut stream
        deadline = _Deadline(call.deadline)
        try:
            for chunk in buffered:
                if (data := event(chunk)) is not None:
                    yield data
            buffered.clear()
            deadline.waiting = True
            async for chunk in iterator:
                deadline.waiting = False
                if (data := event(chunk)) is not None:
                    yield data
                    if deadline.expired:  # it passed while the client was being written to
                        raise TimeoutError
                deadline.waiting = True
            deadline.waiting = False
        except asyncio.CancelledError:
            if not deadline.took():
                raise
            raise TimeoutError from None
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
    except GeneratorExit:  # closed by its consumer, which will not read on: the client left or stopped reading
        status, error = (503, SHUTDOWN) if call.cut else (499, "client disconnected")
        if not call.cut and time.monotonic() >= call.deadline:
            status, error = 504, "the request's deadline passed while the client was not reading"
        raise
    finally:
        if deadline is not None:
            deadline.close()
        call.gateway.drain.discard(call)
        with anyio.CancelScope(shield=True):
            await stream.aclose()
            await call.store(status, deployment, hops, error=error, ttft_ms=ttft_ms, usage=usage)
    if error is None:
        yield b"data: [DONE]\n\n"

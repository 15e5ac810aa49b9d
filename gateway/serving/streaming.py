"""Serving a streaming call: fall back until the first content chunk, then relay chunks as typed events.

Until a chunk with content is ready the chain can still move on to the next deployment; after that an upstream failure
ends the events with an :class:`~minigate.gateway.serving.events.Outcome` naming it, never a hang. The usage row is
committed before the outcome is yielded. A deployment that speaks the client's own protocol streams
:class:`~minigate.gateway.serving.events.Native` events instead: its first content is the first event past the
protocol's preamble, and its usage is read from the events that carry it. A consumer that frames chat-completions
SSE itself may take the rest of a plain upstream's stream as :class:`~minigate.gateway.serving.events.Passed`
payloads (``passthrough``; see :mod:`minigate.gateway.serving.passthrough`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import anyio

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.core.tokens import checked_usage
from minigate.gateway.routing.chain import ChainExhausted, Hop, run_chain
from minigate.gateway.routing.routes import Deployment
from minigate.gateway.serving.events import PREAMBLE, Chunk, Event, EventStream, Native, Outcome, Usage, native_counts
from minigate.gateway.serving.passthrough import FastRelay, fast_relay
from minigate.gateway.serving.proxy import SHUTDOWN, Call, cancelled, check_serves_endpoint, failed, uncancel
from minigate.providers.base import ChunkStream, Provider, ProviderError, ProviderRequest

__all__ = ["serve_stream"]

_TIMER_GRAIN = 0.002  # seconds: how early an event loop's timer may fire


def _generated(choice: dict[str, Any], delta: dict[str, Any]) -> bool:
    """Whether a choice carries generated output: text, content, tool calls or reasoning."""
    return bool(choice.get("text") or delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"))


def _has_content(chunk: dict[str, Any]) -> bool:
    if chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("finish_reason") or _generated(choice, delta):
            return True
        if delta.get("function_call") or delta.get("refusal"):
            return True
    return False


def _generates(chunk: dict[str, Any]) -> int:
    """1 when the chunk carries generated content (about one token, for most upstreams), else 0."""
    return int(any(_generated(c, c.get("delta") or {}) for c in chunk.get("choices") or ()))


def _counted(generated: int) -> dict[str, int] | None:
    """The usage of a cut stream from its content chunks counted: completion tokens only, the prompt unknown."""
    return {"completion_tokens": generated, "total_tokens": generated} if generated else None


def _native_content(event: dict[str, Any]) -> bool:
    return event.get("type") not in PREAMBLE


async def _prime(
    stream: ChunkStream, has_content: Callable[[dict[str, Any]], bool] = _has_content
) -> tuple[AsyncIterator[dict[str, Any]], list[dict[str, Any]]]:
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
            if has_content(chunk):
                break
    except BaseException:
        await stream.aclose()
        raise
    return iterator, buffered


async def serve_stream(call: Call, passthrough: bool = False) -> EventStream:
    """Answer a streaming call; fallback is possible until the first content chunk is ready.

    ``passthrough``: the consumer takes :class:`~minigate.gateway.serving.events.Passed` events (it frames
    chat-completions SSE); they come only where no plugin sees chunks and the answer is not in a native protocol.
    """
    gateway = call.gateway
    hops: list[Hop] = []

    async def attempt(
        provider: Provider, deployment: Deployment
    ) -> tuple[ChunkStream, AsyncIterator[dict[str, Any]], list[dict[str, Any]], ProviderRequest]:
        check_serves_endpoint(provider, call, deployment)
        request = call.provider_request(deployment, provider)
        stream = await provider.open_stream(request)
        iterator, buffered = await _prime(
            stream, _native_content if request.endpoint != call.endpoint else _has_content
        )
        return stream, iterator, buffered, request

    drain = gateway.drain
    drain.add(call)
    try:
        deployment, (stream, iterator, buffered, request), _ = await run_chain(
            call.route, call.providers, call.health, call.deadline, attempt, hops, held=True
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
    outcome = Outcome(deployment, hops, notes=request.notes, native=request.endpoint != call.endpoint)
    fast = passthrough and call.hooks is None and not outcome.native
    relay = _relay(call, outcome, stream, iterator, buffered, ttft_ms, fast)
    # Run to its first yield: from here on closing the relay ends the upstream call and stores the row, even if
    # nobody ever iterates it (an unstarted generator's aclose runs none of its code).
    await anext(relay)
    return EventStream(outcome, relay)


class _Deadline:
    """The call's deadline for the relay: it cancels the relay's task only while the relay waits on the upstream.

    While the relay is held at a ``yield`` (its consumer writes to the client) the deadline only marks itself expired,
    and the relay ends with a 504 once resumed; a write that does not end is bounded where it is made
    (``minigate.gateway.core.writes``). One timer per call: an ``asyncio.timeout`` around each chunk cost more than the
    chunk.
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
        """Whether the cancellation being handled is the deadline's own (then taken back), or, once the deadline has
        passed, one that nobody requests any more.

        The second kind comes from a client write bounded by the same deadline: Python 3.11's ``asyncio.timeout``
        that fires as the write ends takes its cancellation back but leaves it pending, and it lands in the relay's
        next wait on the upstream. A client's disconnect is still requested (``cancelling()`` counts it): a 499.
        """
        if self.cancelled:
            self.cancelled = False
            return self._task.uncancel() <= self._base
        return self.expired and self._task.cancelling() <= self._base

    def close(self) -> None:
        """Disarm."""
        self._handle.cancel()


async def _relay(
    call: Call,
    outcome: Outcome,
    stream: ChunkStream,
    iterator: AsyncIterator[dict[str, Any]],
    buffered: list[dict[str, Any]],
    ttft_ms: float,
    passthrough: bool = False,
) -> AsyncGenerator[Event, None]:
    deployment, hops = outcome.deployment, outcome.hops
    model = deployment.ref
    usage: Any = None
    counts: Any = None  # the usage the client was just sent, for a Usage event after its chunk
    status, error = 200, None
    failure: GatewayError | None = None
    generated = 0  # chunks of generated content relayed: a cut stream's completion tokens when nothing better is known

    def event(chunk: dict[str, Any]) -> Chunk | None:
        nonlocal usage, counts, generated
        generated += _generates(chunk)
        if "usage" in chunk:
            usage = chunk["usage"] or usage  # stored as sent: Call.store checks and reports its counts
            chunk["usage"] = counts = checked_usage(chunk["usage"])[0]  # the client is sent the counts stored
            if not call.client_usage:
                del chunk["usage"]
                if not chunk.get("choices"):
                    return None
        chunk["model"] = model
        if call.hooks is not None:
            chunk = call.hooks.chunk(call, deployment, chunk)
            if counts is not None and call.client_usage:
                counts = chunk.get("usage")  # as the plugins left it
        return Chunk(chunk)

    native_usage: dict[str, Any] = {}  # a native stream's usage as sent so far (Anthropic's comes in two parts)

    def native(data: dict[str, Any]) -> Native:
        nonlocal usage
        kind, found = data["type"], None
        if kind == "message_start" and isinstance(message := data.get("message"), dict):
            found = message.get("usage")
        elif kind == "message_delta":
            found = data.get("usage")
        elif kind in ("response.completed", "response.incomplete") and isinstance(body := data.get("response"), dict):
            found = body.get("usage")
        if isinstance(found, dict):
            native_usage.update(found)
            usage = native_counts(native_usage)
        return Native(kind, data)

    convert: Callable[[dict[str, Any]], Chunk | Native | None] = native if outcome.native else event

    def converted(chunk: dict[str, Any]) -> list[Event]:
        nonlocal counts
        out: list[Event] = [] if (data := convert(chunk)) is None else [data]
        if counts is not None:
            if counts:
                out.append(Usage(counts))
            counts = None
        return out

    fast: FastRelay | None = None
    deadline: _Deadline | None = None
    try:
        yield outcome  # taken by serve_stream: from here on the finally below runs however the relay ends
        call.task = asyncio.current_task()
        if call.cut:
            raise asyncio.CancelledError()  # cut before the first step: end like any other cut stream
        deadline = _Deadline(call.deadline)
        if passthrough:
            fast = await fast_relay(stream, iterator, model, converted)
        try:
            for chunk in buffered:
                if (data := convert(chunk)) is not None:
                    yield data
                if counts is not None:
                    if counts:
                        yield Usage(counts)
                    counts = None
            buffered.clear()
            deadline.waiting = True
            if fast is not None:  # the rest as the upstream's payloads, read block by block
                while (block := await fast.next_block()) is not None:
                    deadline.waiting = False
                    for passed in fast.events(block):
                        yield passed
                    fast.check()
                    if deadline.expired:  # it passed while the client was being written to
                        raise TimeoutError
                    if fast.done:
                        break
                    deadline.waiting = True
                else:  # the body is over
                    deadline.waiting = False
                    for passed in fast.end():
                        yield passed
            else:
                async for chunk in iterator:
                    deadline.waiting = False
                    if (data := convert(chunk)) is not None:
                        yield data
                        if deadline.expired:  # it passed while the client was being written to
                            raise TimeoutError
                    if counts is not None:
                        if counts:
                            yield Usage(counts)
                        counts = None
                    deadline.waiting = True
            deadline.waiting = False
        except asyncio.CancelledError:
            if not deadline.took():
                raise
            raise TimeoutError from None
    except ProviderError as err:
        status, error = (err.status if err.status >= 400 else 502), err.message
        call.health.failure(deployment.ref, err)
        failure = GatewayError(
            f"The upstream failed mid-stream: {err.message}",
            status=status,
            type="upstream_error",
            code=err.code or "upstream_error",
        )
    except TimeoutError:
        status, error = 504, "the request's deadline passed mid-stream"
        failure = GatewayError(
            f"The request timed out: {error}.", status=504, type="timeout_error", code="upstream_timeout"
        )
    except asyncio.CancelledError:
        status, error = (503, SHUTDOWN) if call.cut else (499, "client disconnected")
        if not call.cut:
            raise
        uncancel()  # a no-op when the cut came before the first step (nothing was cancelled then)
        failure = GatewayError(
            f"The answer was cut off: {SHUTDOWN}.", status=503, type="server_error", code="server_shutting_down"
        )
    except GeneratorExit:  # closed by its consumer, which will not read on: the client left or stopped reading
        status, error = (503, SHUTDOWN) if call.cut else (499, "client disconnected")
        # The write that waited ended by the deadline's timer, which uvloop keeps in whole milliseconds: it may
        # fire just before time.monotonic() reaches the deadline.
        if not call.cut and time.monotonic() >= call.deadline - _TIMER_GRAIN:
            status, error = 504, "the request's deadline passed while the client was not reading"
        raise
    finally:
        if deadline is not None:
            deadline.close()
        call.gateway.drain.discard(call)
        call.health.load.done(deployment.ref)  # the stream no longer keeps its deployment busy (run_chain's held)
        outcome.status, outcome.error, outcome.failure = status, error, failure
        with anyio.CancelScope(shield=True):
            await stream.aclose()
            if usage is None and status != 200:  # cut before the upstream's usage came: keep what was generated
                # exact where the provider knows it (a local worker); counted chunks only for a client's stop,
                # since an upstream that broke off never said what it used
                generated += fast.generated if fast is not None else 0
                usage = stream.usage_so_far() or (_counted(generated) if status == 499 else None)
            await call.store(status, deployment, hops, error=error, ttft_ms=ttft_ms, usage=usage)
    yield outcome

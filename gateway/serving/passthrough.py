"""The relay's fast path: the rest of a chat-completions stream passed on as the upstream's JSON payloads.

Taken once the first content chunk has chosen the deployment, for a consumer that frames chat-completions SSE itself,
when no plugin's ``process`` hook sees chunks and the upstream's stream can be scanned (an OpenAI-compatible
provider's). Each plain chunk is checked by one typed decode and passed on with only its ``model`` set; whatever
else comes (usage, an error, ``[DONE]``, anything odd) goes through the reader's whole parse and the ordinary
conversion, in order. See docs/architecture.md, "The stream relay".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import AsyncGeneratorType
from typing import Any

import msgspec

from minigate.gateway.serving.events import Event, Passed
from minigate.providers.base import ChunkStream
from minigate.providers.upstream import EventStream

__all__ = ["FastRelay", "fast_relay"]


class _ModelSwap:
    """Sets ``model`` in a payload's bytes: the one ``"model"`` key, written compactly, gets the deployment's name."""

    __slots__ = ("_new", "_old", "_sent")

    def __init__(self, model: str) -> None:
        self._new = b'"model":' + msgspec.json.encode(model)
        self._sent, self._old = msgspec.Raw(b""), b""

    def __call__(self, data: bytes, sent: msgspec.Raw) -> bytes | None:
        """``data`` with its model replaced; None when that is not certain from the bytes (the whole parse does it)."""
        if not sent:
            return None
        if sent != self._sent:  # compared as Raw: an upstream sends the same model in every chunk
            self._sent, self._old = sent, b'"model":' + bytes(sent)
        if data.count(b'"model"') != 1 or self._old not in data:
            return None
        return data.replace(self._old, self._new)


class FastRelay:
    """Turns the payloads of a stream's blocks into events: runs of plain chunks as one :class:`Passed` each, the
    rest through ``slow`` (the relay's ordinary conversion of one chunk dict), in order."""

    __slots__ = ("_failure", "_read", "_reader", "_scan", "_slow", "_swap", "generated", "next_block")

    def __init__(self, stream: EventStream, model: str, slow: Callable[[dict[str, Any]], Iterable[Event]]) -> None:
        self._reader = stream.reader
        self._scan, self._read = stream.reader.scan, stream.reader.read
        self._swap, self._slow = _ModelSwap(model), slow
        self.generated = 0  # plain chunks passed on that carried generated content
        self._failure: Exception | None = None  # what reading a block raised, once what came before it is relayed
        # The next block of payloads, None once the body is over (see EventStream.payloads).
        self.next_block: Callable[[], Awaitable[list[bytes] | None]] = stream.payloads

    @property
    def done(self) -> bool:
        """The upstream said the stream is over (``[DONE]``): read no further."""
        return self._reader.done

    def events(self, block: list[bytes]) -> list[Event]:
        """The events of one block of payloads, up to the end of the stream if the block holds it, or up to the
        payload that failed: :meth:`check` raises that failure once these events are relayed."""
        events: list[Event] = []
        passed: list[bytes] = []
        scan, swap = self._scan, self._swap
        for data in block:
            found = scan(data)
            if found is not None and (fixed := swap(data, found.model)) is not None:
                self.generated += found.generates()
                passed.append(fixed)
                continue
            if passed:
                events.append(Passed(passed))
                passed = []
            try:
                for chunk in self._read(data):
                    events.extend(self._slow(chunk))
            except Exception as err:  # raised by check(), in its place in the stream
                self._failure = err
                break
            if self._reader.done:
                break
        if passed:
            events.append(Passed(passed))
        return events

    def check(self) -> None:
        """Raise what reading the last block failed with, if it did."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def end(self) -> list[Event]:
        """The events a complete stream still owes once its body is over."""
        return [event for chunk in self._reader.end() for event in self._slow(chunk)]


async def fast_relay(
    stream: ChunkStream,
    primed: AsyncIterator[dict[str, Any]],
    model: str,
    slow: Callable[[dict[str, Any]], Iterable[Event]],
) -> FastRelay | None:
    """The fast path for the rest of ``stream``, whose chunks were read through ``primed`` so far (closed here: the
    stream keeps what it had split off and not handed out); None when its reader cannot scan payloads or the stream
    has ended already (it is then relayed chunk by chunk)."""
    if not (isinstance(stream, EventStream) and stream.reader.scans and isinstance(primed, AsyncGeneratorType)):
        return None
    if primed.ag_frame is None or stream.reader.done:  # nothing left to read
        return None
    await primed.aclose()
    return FastRelay(stream, model, slow)

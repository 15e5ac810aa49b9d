"""What the remote HTTP providers (``openai``, ``anthropic``) share: one guarded aiohttp session, POSTs whose error
answers become failures (credentials blanked, every field cut), capped reads, and the paced reading of an event
stream by a protocol's :class:`StreamReader`.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, Literal, Protocol, TypeVar

import aiohttp
import msgspec
from yarl import URL

from minigate.gateway.core.wire import JSON_DECODE_ERRORS
from minigate.providers.base import (
    ChunkStream,
    Provider,
    ProviderError,
    ProviderRequest,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from minigate.providers.chunk_scan import ChunkScan
from minigate.providers.limits import UpstreamLimits, cut, read_capped
from minigate.providers.netguard import guarded_connector
from minigate.providers.sse import YIELD_EVERY, DataLines, pause

__all__ = [
    "EVENT_NAME",
    "NETWORK_ERRORS",
    "ApiAuth",
    "ErrorFilter",
    "EventStream",
    "HttpProvider",
    "StreamReader",
    "check_auth",
    "check_connection",
    "credentials",
    "error_of",
    "malformed",
    "parse_retry_after",
    "short_error",
    "unavailable",
]

NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
ErrorFilter = Callable[[dict[str, Any]], dict[str, Any]]  # a provider's: blanks credentials out of an error, cuts it
# An event type as it may be written after ``event:`` to the client: a plain dotted name, nothing to inject.
EVENT_NAME = re.compile(r"[A-Za-z0-9_.]{1,100}")


class ApiAuth(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``api_key``: sent as the provider's key header; ``header``: sent as header ``name``; ``none``."""

    type: Literal["api_key", "header", "none"] = "none"
    value: str | None = None
    name: str | None = None


def credentials(auth: ApiAuth, key_header: str, scheme: str = "") -> dict[str, str]:
    """The header carrying ``auth``: an ``api_key`` goes in ``key_header`` after ``scheme``."""
    if auth.type == "api_key" and auth.value:
        return {key_header: f"{scheme}{auth.value}"}
    if auth.type == "header" and auth.name and auth.value:
        return {auth.name: auth.value}
    return {}


class Connection(Protocol):
    """The keys of a remote provider's section that :class:`HttpProvider` reads."""

    auth: ApiAuth
    models: list[str]
    headers: dict[str, str]
    timeout: float
    connect_timeout: float
    max_connections: int
    limits: UpstreamLimits


def check_auth(auth: ApiAuth) -> list[tuple[str, str]]:
    """``(path, message)`` for each problem of a section's ``auth``."""
    issues = []
    if auth.type in ("api_key", "header") and not auth.value:
        issues.append(("auth.value", f"required for auth type {auth.type!r}"))
    if auth.type == "header" and not auth.name:
        issues.append(("auth.name", "required for auth type 'header' (the header to send)"))
    return issues


def check_connection(cfg: Connection) -> list[tuple[str, str]]:
    """``(path, message)`` for each problem of a section's timeouts and limits."""
    timeouts = (("timeout", cfg.timeout), ("connect_timeout", cfg.connect_timeout))
    issues = [(key, "must be positive") for key, value in timeouts if value <= 0]
    return issues + [(f"limits.{key}", message) for key, message in cfg.limits.check()]


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return None if when is None else max(0.0, when.timestamp() - time.time())


def unavailable(name: str, err: BaseException, during: str = "") -> UpstreamUnavailable:
    """Name what went wrong talking to an upstream: refused, timed out, or broken off."""
    if isinstance(err, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamUnavailable(f"{name}: timed out{during} ({type(err).__name__})", code="upstream_timeout")
    if isinstance(err, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(f"{name}: cannot connect: {err.os_error.strerror or err}")
    return UpstreamUnavailable(f"{name}: connection broke{during}: {err or type(err).__name__}")


def error_of(status: int, content: bytes) -> dict[str, Any]:
    """The ``error`` object of an error answer's body (OpenAI and Anthropic both put it there), else a message."""
    try:
        data = msgspec.json.decode(content)
    except JSON_DECODE_ERRORS:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return dict(data["error"])
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return {"message": data["error"]}
    text = content[:300].decode("utf-8", "replace").strip()
    return {"message": f"upstream answered HTTP {status}" + (f": {text}" if text else "")}


def short_error(error: dict[str, Any], limit: int) -> dict[str, Any]:
    """The OpenAI fields of an upstream's error, each a string of at most ``limit`` characters (and a note)."""
    return {key: cut(str(value), limit) for key in ("message", "type", "code", "param") if (value := error.get(key))}


def malformed(provider: str, what: str) -> UpstreamUnavailable:
    """The failure for an answer or stream that does not have the protocol's shape."""
    return UpstreamUnavailable(f"{provider}: {what}", code="upstream_malformed")


class StreamReader:
    """Turns the ``data:`` payloads of one protocol's event stream into the events an :class:`EventStream` yields.

    ``read`` gives the events of one payload; ``done``: read no further; ``finished``: the stream is complete (one
    ending before is cut short); ``end`` gives what a complete stream still owes once it is over. A reader whose
    ``scan`` reads plain payloads without building them (``scans``) gives at most one event per payload.
    """

    __slots__ = ("_provider", "done", "finished")
    scans = False

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self.done = self.finished = False

    def read(self, data: bytes) -> Sequence[dict[str, Any]]:
        """The events of one payload (none for one to skip)."""
        raise NotImplementedError

    def scan(self, data: bytes) -> ChunkScan | None:
        """A plain chunk's payload read without building it; None: ``read`` it (every payload, unless ``scans``)."""
        return None

    def end(self) -> Sequence[dict[str, Any]]:
        """The events a finished stream still owes once it is over."""
        return ()

    def decode(self, data: bytes) -> dict[str, Any] | None:
        """One payload's JSON object, None for other JSON; not JSON is a malformed stream."""
        try:
            event = msgspec.json.decode(data)
        except JSON_DECODE_ERRORS:
            raise self.malformed("malformed event in the upstream stream") from None
        return event if isinstance(event, dict) else None

    def malformed(self, what: str) -> UpstreamUnavailable:
        """The failure for a stream that does not have the protocol's shape."""
        return malformed(self._provider, what)


class EventStream(ChunkStream):
    """Parses an upstream ``text/event-stream`` body into the events its ``reader`` makes, until the reader is done.

    Iterated, it gives the events; :meth:`payloads` gives the rest of the stream as the payloads of its ``data:``
    lines instead (the relay's fast path, see ``minigate.gateway.serving.passthrough``), under the same caps. Either
    way it pauses after :data:`~minigate.providers.sse.YIELD_EVERY` s of work without waiting on the upstream
    (:func:`~minigate.providers.sse.pause`): relaying bytes that are already buffered never suspends otherwise, and a
    flood of tiny chunks would keep everyone waiting.
    """

    def __init__(
        self, response: aiohttp.ClientResponse, provider: str, limits: UpstreamLimits, reader: StreamReader
    ) -> None:
        self._response, self._provider, self._limits, self.reader = response, provider, limits, reader
        self._lines = DataLines(limits, provider)
        self._left: deque[bytes] = deque()  # payloads split off the bytes received, not handed out yet
        self._ran = time.perf_counter()  # since when the reader has worked without waiting on the upstream

    async def _split(self) -> list[bytes]:
        """The payloads split off the next bytes the upstream sends that complete any; none once the body is over."""
        content, clock = self._response.content, time.perf_counter
        try:
            while True:
                raw = content.read_nowait()
                if raw:
                    if clock() - self._ran > YIELD_EVERY:  # a flood of lines that are not events, or of events
                        await pause()
                        self._ran = clock()
                else:
                    raw = await content.readany()  # waits: others run meanwhile
                    self._ran = clock()
                    if not raw:
                        return []
                if found := self._lines.feed(raw):
                    return found
        except NETWORK_ERRORS as err:
            raise unavailable(self._provider, err, " mid-stream") from None

    async def _fill(self) -> bool:
        """Split the next bytes the upstream sends into payloads; False once the body is over."""
        found = await self._split()
        self._left.extend(found)
        return bool(found)

    def _ended(self) -> None:
        if not self.reader.finished:
            raise UpstreamUnavailable(
                f"{self._provider}: upstream stream ended before it finished", code="upstream_truncated"
            )

    async def payloads(self) -> list[bytes] | None:
        """The payloads split off the next bytes the upstream sent (at most 64), None once the body is over and
        complete (it raises when the body ended before the reader saw the stream finish)."""
        left, clock = self._left, time.perf_counter
        if left:
            if clock() - self._ran > YIELD_EVERY:  # a flood already split: others get their turn
                await pause()
                self._ran = clock()
            if len(left) <= 64:
                taken = list(left)
                left.clear()
                return taken
            return [left.popleft() for _ in range(64)]
        found = await self._split()  # kept as the list split off: most reads complete one or a few lines
        if not found:
            self._ended()
            return None
        if len(found) <= 64:
            return found
        left.extend(found[64:])
        return found[:64]

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        reader, left, clock = self.reader, self._left, time.perf_counter
        read = reader.read
        while left or await self._fill():
            for event in read(left.popleft()):  # popped first: what is left is what the payloads() path reads on
                yield event
            if reader.done:
                return
            if clock() - self._ran > YIELD_EVERY:
                await pause()
                self._ran = clock()
        self._ended()
        for event in reader.end():
            yield event

    async def aclose(self) -> None:
        # close(), not release(): a stream abandoned early must drop the connection so the upstream stops too.
        self._response.close()


C = TypeVar("C", bound=Connection)


class HttpProvider(Provider, Generic[C]):
    """A provider talking to a remote HTTP API over one pooled keep-alive client (netguard's connector: no
    redirects followed, no proxy from the environment, no cookies)."""

    def __init__(self, name: str, config: C) -> None:
        super().__init__(name)
        self.config = config
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = guarded_connector(limit=self.config.max_connections, ttl_dns_cache=300)
        self._client = aiohttp.ClientSession(
            connector=connector, trust_env=False, skip_auto_headers=("User-Agent",), cookie_jar=aiohttp.DummyCookieJar()
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def models(self) -> list[str]:
        return list(self.config.models)

    def secrets(self) -> list[str]:
        values = [self.config.auth.value or "", *self.config.headers.values()]
        return [v for v in values if len(v) >= 6]

    def _error(self, error: dict[str, Any]) -> dict[str, Any]:
        """An upstream's error as passed on: credentials blanked out first (some services quote the key they got),
        then every field cut to its cap."""
        if secrets := self.secrets():
            scrubbed = {}
            for key, value in error.items():
                if isinstance(value, str):
                    for secret in secrets:
                        value = value.replace(secret, "[redacted]")
                scrubbed[key] = value
            error = scrubbed
        return short_error(error, self.config.limits.max_error_message_chars)

    def _failure(self, status: int, error: dict[str, Any], retry_after: float | None) -> UpstreamStatusError:
        """The failure for an error answer (``error`` already blanked and cut)."""
        return UpstreamStatusError(status, error, retry_after=retry_after)

    async def _post(
        self, url: URL, body: dict[str, Any], headers: Mapping[str, str], request: ProviderRequest
    ) -> aiohttp.ClientResponse:
        """POST ``body`` within ``request``'s deadline; an error answer is raised as its failure."""
        if self._client is None:
            raise UpstreamUnavailable(f"{self.name}: provider is not started")
        remaining = request.remaining()
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=min(self.config.connect_timeout, remaining),
            sock_read=min(self.config.timeout, remaining),
        )
        try:
            response = await self._client.post(
                url, data=msgspec.json.encode(body), headers=headers, timeout=timeout, allow_redirects=False
            )
        except NETWORK_ERRORS as err:
            raise unavailable(self.name, err) from None
        if response.status < 300:
            return response
        status, content = response.status, await self._read(response, "max_error_body_bytes", reading=False)
        if content is None:
            raise self.config.limits.exceeded(
                self.name, "max_error_body_bytes", f"the upstream's error answer (HTTP {status})"
            )
        if status < 400:  # following a redirect would send our credentials wherever the upstream points
            raise UpstreamUnavailable(f"{self.name}: upstream redirected (HTTP {status}); not followed")
        raise self._failure(status, self._error(error_of(status, content)), parse_retry_after(response.headers))

    async def _read(self, response: aiohttp.ClientResponse, cap: str, *, reading: bool = True) -> bytes | None:
        """The body under ``limits.<cap>`` (None past it); the connection is dropped unless it was read whole.

        A network failure is raised when ``reading`` an answer; for an error's body it just leaves it empty.
        """
        content = None
        try:
            content = await read_capped(response.content, getattr(self.config.limits, cap))
        except NETWORK_ERRORS as err:
            if reading:
                raise unavailable(self.name, err, " reading the answer") from None
            content = b""
        finally:
            if content is None:
                response.close()
            else:
                response.release()
        return content

    async def _json(self, response: aiohttp.ClientResponse) -> Any:
        """A JSON answer's decoded body, within ``limits.max_body_bytes``."""
        content = await self._read(response, "max_body_bytes")
        if content is None:
            raise self.config.limits.exceeded(self.name, "max_body_bytes", "the upstream's answer")
        try:
            return msgspec.json.decode(content)
        except JSON_DECODE_ERRORS:
            raise malformed(self.name, "answer is not JSON") from None

    def _events(self, response: aiohttp.ClientResponse, reader: StreamReader) -> ChunkStream:
        """An event-stream answer read by ``reader`` (any other answer is the provider's failure)."""
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.close()
            raise ProviderError(f"{self.name}: expected an event stream, got {response.headers.get('content-type')}")
        return EventStream(response, self.name, self.config.limits, reader)

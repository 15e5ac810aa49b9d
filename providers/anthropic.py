"""Remote upstreams that speak Anthropic's Messages API (Anthropic itself, and services compatible with it).

Chat completions are translated to ``POST {endpoint}/messages`` and the answer back (``anthropic_request``,
``anthropic_answer``); a native ``/v1/messages`` request (endpoint ``messages``) is passed through as the client sent
it, with the client's ``anthropic-beta`` header unless the section sets its own. The connection, caps and error
handling are the OpenAI-compatible provider's.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
from yarl import URL

from minigate.gateway.core.wire import JSON_DECODE_ERRORS
from minigate.providers.anthropic_answer import ERROR_STATUS, ChunkMaker, Malformed, chat_completion, status_error
from minigate.providers.anthropic_request import DEFAULT_MAX_TOKENS, messages_request
from minigate.providers.base import ChunkStream, Provider, ProviderError, ProviderRequest, UpstreamUnavailable
from minigate.providers.limits import UpstreamLimits, read_capped
from minigate.providers.netguard import guarded_connector
from minigate.providers.openai_compat import (
    NETWORK_ERRORS,
    ApiAuth,
    error_of,
    parse_retry_after,
    short_error,
    unavailable,
)
from minigate.providers.registry import (
    ProviderContext,
    ProviderRegistry,
    ProviderType,
    check_endpoint_url,
    loopback_url,
)
from minigate.providers.sse import YIELD_EVERY, DataLines, pause

__all__ = ["AnthropicProvider", "AnthropicProviderConfig", "register"]

_EVENT_NAME = re.compile(r"[A-Za-z0-9_.]{1,100}")  # written after ``event:`` to the client: nothing to inject


class AnthropicProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A ``models.providers.<name>`` section of type ``anthropic``; the keys of the ``openai`` type, and two more.

    ``auth`` of type ``api_key`` is sent as ``x-api-key``. ``anthropic_version`` is the ``anthropic-version``
    header; ``default_max_tokens`` is sent when a request names no ``max_tokens`` (the Messages API needs one).
    """

    type: str = "anthropic"
    endpoint: str = "https://api.anthropic.com/v1"
    auth: ApiAuth = msgspec.field(default_factory=ApiAuth)
    models: list[str] = msgspec.field(default_factory=list)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    anthropic_version: str = "2023-06-01"
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    timeout: float = 600.0  # longest silence between two bytes of an answer
    connect_timeout: float = 10.0
    max_connections: int = 1000
    limits: UpstreamLimits = msgspec.field(default_factory=UpstreamLimits)


def _check(cfg: AnthropicProviderConfig) -> list[tuple[str, str]]:
    issues = []
    if problem := check_endpoint_url(cfg.endpoint):
        issues.append(("endpoint", problem))
    elif not URL(cfg.endpoint).path.rstrip("/").endswith("/v1"):
        issues.append(("endpoint", "the base URL including /v1 (requests go to <endpoint>/messages)"))
    if cfg.auth.type in ("api_key", "header") and not cfg.auth.value:
        issues.append(("auth.value", f"required for auth type {cfg.auth.type!r}"))
    if cfg.auth.type == "header" and not cfg.auth.name:
        issues.append(("auth.name", "required for auth type 'header' (the header to send)"))
    if not cfg.anthropic_version or not cfg.anthropic_version.isprintable() or not cfg.anthropic_version.isascii():
        issues.append(("anthropic_version", "must be a version such as '2023-06-01'"))
    if cfg.default_max_tokens <= 0:
        issues.append(("default_max_tokens", "must be positive"))
    for key, value in (("timeout", cfg.timeout), ("connect_timeout", cfg.connect_timeout)):
        if value <= 0:
            issues.append((key, "must be positive"))
    issues.extend((f"limits.{key}", message) for key, message in cfg.limits.check())
    return issues


class _PassThrough:
    """A native stream's events as they came (each checked to have a plain ``type``), in place of a
    :class:`ChunkMaker`: complete at ``message_stop``, or at the ``message_delta`` giving the stop reason."""

    __slots__ = ("finished", "stopped")

    def __init__(self) -> None:
        self.finished = self.stopped = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if not isinstance(kind, str) or not _EVENT_NAME.fullmatch(kind):
            raise Malformed("an event without a plain type")
        if kind == "message_stop":
            self.finished = self.stopped = True
        elif kind == "message_delta" and isinstance(delta := event.get("delta"), dict) and delta.get("stop_reason"):
            self.finished = True
        return [event]

    def end(self) -> list[dict[str, Any]]:
        return [{"type": "message_stop"}]  # given the stop reason, but cut before its last event


class _EventStream(ChunkStream):
    """A Messages event stream as chat-completion chunks; it pauses as the OpenAI-compatible provider's does."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        provider: str,
        limits: UpstreamLimits,
        error: Callable[[dict[str, Any]], dict[str, Any]],
        maker: ChunkMaker | _PassThrough,
    ) -> None:
        self._response, self._provider, self._limits = response, provider, limits
        self._error, self._maker = error, maker

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        decode, maker = msgspec.json.decode, self._maker
        lines = DataLines(self._limits, self._provider)
        clock = time.perf_counter
        suspended = clock()
        try:
            async for raw in self._response.content.iter_any():
                for data in lines.feed(raw):
                    try:
                        event = decode(data)
                    except JSON_DECODE_ERRORS:
                        raise self._malformed("malformed event in the upstream stream") from None
                    if not isinstance(event, dict):
                        continue
                    if event.get("type") == "error":
                        err = event.get("error")
                        if not isinstance(err, dict):
                            err = {"message": "the upstream sent an error event"}
                        raise status_error(ERROR_STATUS.get(str(err.get("type")), 502), self._error(err))
                    try:
                        chunks = maker.feed(event)
                    except Malformed as problem:
                        raise self._malformed(f"malformed event in the upstream stream: {problem}") from None
                    for chunk in chunks:
                        yield chunk
                    if maker.stopped:
                        return
                    if clock() - suspended > YIELD_EVERY:
                        await pause()
                        suspended = clock()
                if clock() - suspended > YIELD_EVERY:  # a flood of lines that are not events
                    await pause()
                    suspended = clock()
        except NETWORK_ERRORS as err:
            raise unavailable(self._provider, err, " mid-stream") from None
        if not maker.finished:
            raise UpstreamUnavailable(
                f"{self._provider}: upstream stream ended before it finished", code="upstream_truncated"
            )
        for chunk in maker.end():  # a stream that gave its stop reason but no message_stop is complete
            yield chunk

    def _malformed(self, what: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(f"{self._provider}: {what}", code="upstream_malformed")

    async def aclose(self) -> None:
        # close(), not release(): a stream abandoned early must drop the connection so the upstream stops too.
        self._response.close()


class AnthropicProvider(Provider):
    """Serves chat completions from a Messages API upstream over one pooled keep-alive client."""

    type_name = "anthropic"
    endpoints = frozenset({"chat/completions", "messages"})

    def __init__(self, name: str, config: AnthropicProviderConfig) -> None:
        super().__init__(name)
        self.config = config
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": config.anthropic_version,
            **config.headers,
        }
        if config.auth.type == "api_key" and config.auth.value:
            headers["x-api-key"] = config.auth.value
        elif config.auth.type == "header" and config.auth.name and config.auth.value:
            headers[config.auth.name] = config.auth.value
        self._headers = headers
        self._own_beta = any(name.lower() == "anthropic-beta" for name in config.headers)
        self._url = URL(f"{config.endpoint.rstrip('/')}/messages")
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
        """An upstream's error as passed on: credentials blanked out first, then every field cut to its cap."""
        scrubbed = {}
        for key, value in error.items():
            if isinstance(value, str):
                for secret in self.secrets():
                    value = value.replace(secret, "[redacted]")
            scrubbed[key] = value
        return short_error(scrubbed, self.config.limits.max_error_message_chars)

    async def send(self, body: dict[str, Any], request: ProviderRequest) -> aiohttp.ClientResponse:
        """POST a Messages ``body`` within ``request``'s deadline; an error answer is raised as its failure.

        Takes a body already in the Messages API's form, so a native ``/v1/messages`` can pass its own through
        (with the client's ``anthropic-beta``, unless the section's ``headers`` set one).
        """
        if self._client is None:
            raise UpstreamUnavailable(f"{self.name}: provider is not started")
        remaining = request.remaining()
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=min(self.config.connect_timeout, remaining),
            sock_read=min(self.config.timeout, remaining),
        )
        headers = self._headers
        if (beta := request.headers.get("anthropic-beta")) and not self._own_beta:
            headers = {**headers, "anthropic-beta": beta}
        try:
            response = await self._client.post(
                self._url, data=msgspec.json.encode(body), headers=headers, timeout=timeout, allow_redirects=False
            )
        except NETWORK_ERRORS as err:
            raise unavailable(self.name, err) from None
        if response.status < 300:
            return response
        status, content = response.status, await self._read(response, self.config.limits.max_error_body_bytes, False)
        if content is None:
            raise self.config.limits.exceeded(
                self.name, "max_error_body_bytes", f"the upstream's error answer (HTTP {status})"
            )
        if status < 400:  # following a redirect would send our credentials wherever the upstream points
            raise UpstreamUnavailable(f"{self.name}: upstream redirected (HTTP {status}); not followed")
        error = self._error(error_of(status, content))
        raise status_error(status, error, parse_retry_after(response.headers))

    async def _read(self, response: aiohttp.ClientResponse, cap: int, reading: bool = True) -> bytes | None:
        """The body under ``cap`` bytes (None past it); a network failure is raised only when ``reading`` an
        answer (an error's body is just left empty). The connection is dropped unless it was read whole."""
        content = None
        try:
            content = await read_capped(response.content, cap)
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

    def _body(self, request: ProviderRequest) -> dict[str, Any]:
        if request.endpoint == "messages":  # the client's own Messages request
            return request.body
        body = {**request.body, "stream": request.stream}
        return messages_request(body, request.model, default_max_tokens=self.config.default_max_tokens)

    async def complete(self, request: ProviderRequest) -> dict[str, Any]:
        response = await self.send(self._body(request), request)
        content = await self._read(response, self.config.limits.max_body_bytes)
        if content is None:
            raise self.config.limits.exceeded(self.name, "max_body_bytes", "the upstream's answer")
        try:
            answer = msgspec.json.decode(content)
            if request.endpoint == "messages":
                return _message(answer)
            return chat_completion(answer, request.model)
        except JSON_DECODE_ERRORS:
            raise UpstreamUnavailable(f"{self.name}: answer is not JSON", code="upstream_malformed") from None
        except Malformed as problem:
            raise UpstreamUnavailable(f"{self.name}: malformed answer: {problem}", code="upstream_malformed") from None

    async def open_stream(self, request: ProviderRequest) -> ChunkStream:
        response = await self.send(self._body(request), request)
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.close()
            raise ProviderError(f"{self.name}: expected an event stream, got {response.headers.get('content-type')}")
        options = request.body.get("stream_options")
        maker: ChunkMaker | _PassThrough = (
            _PassThrough()
            if request.endpoint == "messages"
            else ChunkMaker(request.model, bool(isinstance(options, dict) and options.get("include_usage")))
        )
        return _EventStream(response, self.name, self.config.limits, self._error, maker)


def _message(answer: Any) -> dict[str, Any]:
    """A native answer as passed on: a ``message`` object with a list of content blocks."""
    if not isinstance(answer, dict) or answer.get("type") != "message" or not isinstance(answer.get("content"), list):
        raise Malformed("not a message object with a list of content blocks")
    return answer


def _factory(name: str, config: AnthropicProviderConfig, context: ProviderContext) -> Provider:
    return AnthropicProvider(name, config)


def _local(config: AnthropicProviderConfig) -> bool:
    return loopback_url(config.endpoint)


def register(registry: ProviderRegistry) -> None:
    """Register the ``anthropic`` provider type (local only when its endpoint is a loopback address)."""
    registry.register(ProviderType("anthropic", AnthropicProviderConfig, _factory, _check, local=_local))

"""Remote upstreams that speak Anthropic's Messages API (Anthropic itself, and services compatible with it).

Chat completions are translated to ``POST {endpoint}/messages`` and the answer back (``anthropic_request``,
``anthropic_answer``); a native ``/v1/messages`` request (endpoint ``messages``) is passed through as the client sent
it, with the client's ``anthropic-beta`` header unless the section sets its own. The connection, caps and error
handling are ``upstream``'s, as the OpenAI-compatible provider's are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec
from yarl import URL

from minigate.providers.anthropic_answer import ERROR_STATUS, ChunkMaker, Malformed, chat_completion, status_error
from minigate.providers.anthropic_request import DEFAULT_MAX_TOKENS, messages_request
from minigate.providers.base import ChunkStream, Provider, ProviderRequest, UpstreamStatusError
from minigate.providers.limits import UpstreamLimits
from minigate.providers.registry import (
    ProviderContext,
    ProviderRegistry,
    ProviderType,
    check_endpoint_url,
    loopback_url,
)
from minigate.providers.upstream import (
    EVENT_NAME,
    ApiAuth,
    ErrorFilter,
    HttpProvider,
    StreamReader,
    check_auth,
    check_connection,
    credentials,
    malformed,
)

__all__ = ["AnthropicProvider", "AnthropicProviderConfig", "register"]


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
    issues += check_auth(cfg.auth)
    if not cfg.anthropic_version or not cfg.anthropic_version.isprintable() or not cfg.anthropic_version.isascii():
        issues.append(("anthropic_version", "must be a version such as '2023-06-01'"))
    if cfg.default_max_tokens <= 0:
        issues.append(("default_max_tokens", "must be positive"))
    return issues + check_connection(cfg)


class _PassThrough:
    """A native stream's events as they came (each checked to have a plain ``type``), in place of a
    :class:`ChunkMaker`: complete at ``message_stop``, or at the ``message_delta`` giving the stop reason."""

    __slots__ = ("finished", "stopped")

    def __init__(self) -> None:
        self.finished = self.stopped = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if not isinstance(kind, str) or not EVENT_NAME.fullmatch(kind):
            raise Malformed("an event without a plain type")
        if kind == "message_stop":
            self.finished = self.stopped = True
        elif kind == "message_delta" and isinstance(delta := event.get("delta"), dict) and delta.get("stop_reason"):
            self.finished = True
        return [event]

    def end(self) -> list[dict[str, Any]]:
        return [{"type": "message_stop"}]  # given the stop reason, but cut before its last event


class _MessagesReader(StreamReader):
    """Turns the payloads of a Messages event stream into what ``maker`` makes of their events (chat chunks, or
    the events as they came); an ``error`` event is the provider's failure."""

    __slots__ = ("_error", "_maker")

    def __init__(self, provider: str, error: ErrorFilter, maker: ChunkMaker | _PassThrough) -> None:
        super().__init__(provider)
        self._error, self._maker = error, maker

    def read(self, data: bytes) -> Sequence[dict[str, Any]]:
        event = self.decode(data)
        if event is None:
            return ()
        if event.get("type") == "error":
            err = event.get("error")
            if not isinstance(err, dict):
                err = {"message": "the upstream sent an error event"}
            raise status_error(ERROR_STATUS.get(str(err.get("type")), 502), self._error(err))
        try:
            chunks = self._maker.feed(event)
        except Malformed as problem:
            raise self.malformed(f"malformed event in the upstream stream: {problem}") from None
        self.done, self.finished = self._maker.stopped, self._maker.finished
        return chunks

    def end(self) -> Sequence[dict[str, Any]]:
        return self._maker.end()  # a stream that gave its stop reason but no message_stop is complete


class AnthropicProvider(HttpProvider[AnthropicProviderConfig]):
    """Serves chat completions from a Messages API upstream over one pooled keep-alive client."""

    type_name = "anthropic"
    endpoints = frozenset({"chat/completions", "messages"})

    def __init__(self, name: str, config: AnthropicProviderConfig) -> None:
        super().__init__(name, config)
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": config.anthropic_version,
            **config.headers,
            **credentials(config.auth, "x-api-key"),
        }
        self._own_beta = any(name.lower() == "anthropic-beta" for name in config.headers)
        self._url = URL(f"{config.endpoint.rstrip('/')}/messages")

    def _failure(self, status: int, error: dict[str, Any], retry_after: float | None) -> UpstreamStatusError:
        return status_error(status, error, retry_after)

    async def send(self, body: dict[str, Any], request: ProviderRequest) -> aiohttp.ClientResponse:
        """POST a Messages ``body`` within ``request``'s deadline; an error answer is raised as its failure.

        Takes a body already in the Messages API's form, so a native ``/v1/messages`` can pass its own through
        (with the client's ``anthropic-beta``, unless the section's ``headers`` set one).
        """
        headers = self._headers
        if (beta := request.headers.get("anthropic-beta")) and not self._own_beta:
            headers = {**headers, "anthropic-beta": beta}
        return await self._post(self._url, body, headers, request)

    def _body(self, request: ProviderRequest) -> dict[str, Any]:
        if request.endpoint == "messages":  # the client's own Messages request
            return request.body
        body = {**request.body, "stream": request.stream}
        return messages_request(body, request.model, default_max_tokens=self.config.default_max_tokens)

    async def complete(self, request: ProviderRequest) -> dict[str, Any]:
        answer = await self._json(await self.send(self._body(request), request))
        try:
            return _message(answer) if request.endpoint == "messages" else chat_completion(answer, request.model)
        except Malformed as problem:
            raise malformed(self.name, f"malformed answer: {problem}") from None

    async def open_stream(self, request: ProviderRequest) -> ChunkStream:
        response = await self.send(self._body(request), request)
        options = request.body.get("stream_options")
        maker: ChunkMaker | _PassThrough = (
            _PassThrough()
            if request.endpoint == "messages"
            else ChunkMaker(request.model, bool(isinstance(options, dict) and options.get("include_usage")))
        )
        return self._events(response, _MessagesReader(self.name, self._error, maker))


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

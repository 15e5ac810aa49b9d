"""The provider seam: one small interface that local, remote and fake providers share.

A provider answers a :class:`ProviderRequest` with a JSON body or a stream of chunk dicts, and reports every
failure as a :class:`ProviderError` whose ``fallback`` flag says whether the chain may try the next deployment::

    ProviderError                  any failure of one deployment; carries status, type, code, retry_after
    ├── UpstreamUnavailable        could not talk to it: refused, reset, timeout, worker died (fallback)
    │   └── UpstreamTooLarge       it sent more than a cap allows: a body, an SSE line, a stream (fallback)
    └── UpstreamStatusError        it answered with an error status; ``classify_status`` sets ``fallback``
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

__all__ = [
    "ChunkStream",
    "Endpoint",
    "ManagesModels",
    "Provider",
    "ProviderError",
    "ProviderInfo",
    "ProviderRequest",
    "UpstreamStatusError",
    "UpstreamTooLarge",
    "UpstreamUnavailable",
    "classify_status",
]

# "responses" and "messages" are the Responses and Messages APIs, served only by providers that speak them natively
# (the client's own request passed through; see minigate.gateway.serving.proxy.Passthrough).
Endpoint = Literal["chat/completions", "completions", "embeddings", "responses", "messages"]


@dataclass(slots=True)
class ProviderRequest:
    """One call to one deployment.

    ``body`` is the client's JSON body with routing fields removed and ``model`` set to the provider's own
    model name; fields the gateway does not interpret are in it unchanged, for providers that pass them on.
    """

    endpoint: Endpoint
    model: str
    body: dict[str, Any]
    stream: bool
    deadline: float  # time.monotonic() value by which the whole client request must be done
    request_id: str = ""
    # What the provider tells the client about how it served the call: ``x-minigate-<name>`` response headers.
    notes: dict[str, str] = field(default_factory=dict)
    # Protocol headers of the client's that a native upstream may be sent (``anthropic-beta``); empty otherwise.
    headers: dict[str, str] = field(default_factory=dict)

    def remaining(self) -> float:
        """Seconds left before the request's deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())


class ProviderError(Exception):
    """A deployment failed. ``fallback`` says whether another deployment may succeed where this one failed."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        type: str = "upstream_error",
        code: str | None = None,
        param: str | None = None,
        fallback: bool = True,
        retry_after: float | None = None,
        cooldown: bool = True,
        cause: str | None = None,
        capability: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.fallback = fallback
        self.retry_after = retry_after
        # False for failures that say nothing about the deployment's health (a context-length refusal).
        self.cooldown = cooldown
        # Names one fault that failed several requests at once (a local worker's crash): it counts once.
        self.cause = cause
        # The deployment cannot do what was asked (images, logprobs, n > 1): a feature, not a fault. Another
        # local deployment may be tried; a remote one only where the agent allows ``capability_fallback``.
        self.capability = capability


class UpstreamUnavailable(ProviderError):
    """The deployment could not be reached or stopped answering: always a fallback cause."""

    def __init__(
        self, message: str, *, code: str = "upstream_unavailable", status: int = 502, cause: str | None = None
    ) -> None:
        super().__init__(message, status=status, type="upstream_error", code=code, fallback=True, cause=cause)


class UpstreamTooLarge(UpstreamUnavailable):
    """The deployment sent more than one of its caps allows; the message names the cap and its value."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="upstream_too_large")


_CONTEXT_MARKERS = (
    "context_length",
    "context length",
    "maximum context",
    "context window",
    "too many tokens",
)
_MODEL_MARKERS = ("model_not_found", "model not found", "does not exist", "not supported", "unknown model")


def classify_status(status: int, error: dict[str, Any]) -> tuple[bool, bool]:
    """Decide ``(fallback, cooldown)`` for an upstream error status and its OpenAI-shaped ``error`` object.

    Fallback: 408, 409, 429, 5xx, auth failures of the gateway's own credentials (401/403), 404, and 400s that
    say the model is unknown or the context is too long. Everything else (400 validation, 413, 422) is the
    client's fault and would be refused by any provider, so it comes back at once.
    """
    text = " ".join(str(error.get(k) or "") for k in ("code", "type", "message")).lower()
    if status == 400 and any(m in text for m in _CONTEXT_MARKERS):
        return True, False
    if status in (400, 404, 422) and any(m in text for m in _MODEL_MARKERS):
        return True, False
    if status in (401, 403, 404, 408, 409, 429) or status >= 500:
        return True, True
    return False, False


class UpstreamStatusError(ProviderError):
    """The deployment answered with an error status; its OpenAI-shaped error fields are kept."""

    def __init__(self, status: int, error: dict[str, Any], *, retry_after: float | None = None) -> None:
        fallback, cooldown = classify_status(status, error)
        message = str(error.get("message") or f"upstream answered HTTP {status}")
        super().__init__(
            message,
            status=status,
            type=str(error.get("type") or "upstream_error"),
            code=None if error.get("code") is None else str(error.get("code")),
            param=None if error.get("param") is None else str(error.get("param")),
            fallback=fallback,
            retry_after=retry_after,
            cooldown=cooldown,
        )


class ChunkStream(abc.ABC):
    """An open stream of OpenAI chunk dicts. Iterate it; always ``aclose()`` it (it closes the upstream)."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    def usage_so_far(self) -> dict[str, int] | None:
        """The tokens used so far, for a stream cut before its usage chunk (None: only the chunks tell)."""
        return None


@dataclass(slots=True)
class ProviderInfo:
    """What the admin and /v1/models see of a provider's model."""

    id: str
    state: str = "available"
    details: dict[str, Any] = field(default_factory=dict)


class Provider(abc.ABC):
    """A source of completions: a remote OpenAI-compatible service, a local engine, or a test fake.

    Implement ``complete`` and ``open_stream`` (and ``endpoints`` for what you support); ``start``/``close``
    hold any shared clients or worker processes. ``open_stream`` must raise :class:`ProviderError` for
    failures that happen before the first chunk, so the router can still fall back.
    """

    type_name: ClassVar[str]
    endpoints: ClassVar[frozenset[str]] = frozenset({"chat/completions"})

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:
        """Acquire resources (HTTP client, workers). Called once in the app's lifespan."""

    async def close(self) -> None:
        """Release everything ``start`` acquired."""

    def models(self) -> list[str]:
        """Model names this provider is known to serve (may be empty for 'anything the upstream has')."""
        return []

    def secrets(self) -> list[str]:
        """Configured values that must never be shown: credentials, header values. Logs blank them out."""
        return []

    @abc.abstractmethod
    async def complete(self, request: ProviderRequest) -> dict[str, Any]:
        """Answer a non-streaming request with the OpenAI JSON body."""

    @abc.abstractmethod
    async def open_stream(self, request: ProviderRequest) -> ChunkStream:
        """Start a streaming request; raise ProviderError for anything that fails before the first chunk."""


@runtime_checkable
class ManagesModels(Protocol):
    """A provider whose models can be listed with their state, loaded, unloaded, pulled, imported, removed."""

    def info(self) -> list[ProviderInfo]: ...

    async def load(self, model: str) -> Any: ...

    async def unload(self, model: str) -> bool: ...

    async def reload(self, model: str) -> Any: ...

    async def remove(self, model: str) -> None: ...

    async def pull(
        self,
        model: str | None = None,
        *,
        name: str | None = None,
        subfolder: str | None = None,
        file: str | None = None,
        precision: str = "int4",
        force: bool = False,
        on_progress: Callable[[str], None] | None = None,
    ) -> Any: ...

    async def import_model(
        self,
        source: str,
        model: str,
        *,
        precision: str = "int4",
        force: bool = False,
        on_progress: Callable[[str], None] | None = None,
    ) -> Any: ...

"""What the serving layer hands outward: typed events and answers, never bytes or HTTP headers.

A streamed call is an :class:`EventStream`: :class:`Chunk` (or :class:`Passed`) and :class:`Usage` events, then its
:class:`Outcome`; when a deployment that speaks the client's own protocol answered (``Outcome.native``),
:class:`Native` events instead of chunks. A non-streamed call is a :class:`Reply`. Each wire protocol maps these
to its own frames (see docs/architecture.md, "The request path").
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.core.tokens import valid_count
from minigate.gateway.routing.chain import Hop
from minigate.gateway.routing.routes import Deployment

__all__ = [
    "PREAMBLE",
    "Chunk",
    "Event",
    "EventStream",
    "Native",
    "Outcome",
    "Passed",
    "Reply",
    "Usage",
    "native_counts",
]


@dataclass(slots=True, eq=False)
class Outcome:
    """Who answered (the deployment, after the ``hops`` that did not) and how the call ended.

    ``status`` and ``error`` are the usage row's; ``failure`` is what the client is told when the answer broke
    off mid-stream (None when it completed).
    """

    deployment: Deployment
    hops: list[Hop]
    status: int = 200
    error: str | None = None
    failure: GatewayError | None = None
    notes: dict[str, str] = field(default_factory=dict)  # the answering provider's notes (ProviderRequest.notes)
    native: bool = False  # answered in the client's own protocol: a native Reply body, Native events

    @property
    def fallbacks(self) -> int:
        """How many deployments were passed over before this one answered."""
        return len(self.hops)


@dataclass(slots=True, eq=False)
class Chunk:
    """One chunk of the answer, the upstream's dict as the client is sent it (unknown fields kept)."""

    data: dict[str, Any]

    def choices(self) -> list[dict[str, Any]]:
        """The chunk's choices (objects only)."""
        choices = self.data.get("choices")
        return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []

    def pieces(self) -> list[str]:
        """The content delta of each choice that has one, in order."""
        return [piece for c in self.choices() if (piece := (c.get("delta") or {}).get("content"))]

    def text(self) -> str:
        """The chunk's content delta."""
        return "".join(self.pieces())

    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool-call deltas of every choice."""
        return [call for c in self.choices() for call in (c.get("delta") or {}).get("tool_calls") or ()]


@dataclass(slots=True, eq=False)
class Passed:
    """Chunks passed through as the upstream's JSON, in order, ``model`` already the one the client is sent: only
    for a consumer that asked for them (``serve_stream(call, passthrough=True)``), which frames each as it is."""

    payloads: list[bytes]


@dataclass(slots=True, eq=False)
class Usage:
    """The answer's token counts, as the client is sent them (checked, see ``minigate.gateway.core.tokens``)."""

    counts: dict[str, Any]


# Native events that come before anything the model generated (an item or block begun, still empty, counts too):
# until another event, the chain may still fall back.
PREAMBLE = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.queued",
        "response.output_item.added",
        "response.content_part.added",
        "message_start",
        "content_block_start",
        "ping",
    }
)


@dataclass(slots=True, eq=False)
class Native:
    """One event of a native protocol's stream (Responses, Anthropic Messages), as the upstream sent it.

    ``event`` is its type (``data["type"]``, checked by the provider to be a plain name); the edge handler of
    that protocol passes it on, fixing only what the gateway owns (ids, ``model``, sequence numbers).
    """

    event: str
    data: dict[str, Any]


def native_counts(usage: Any) -> dict[str, Any] | None:
    """A native answer's ``usage`` as chat-completions counts, for the usage row.

    Responses (``input_tokens``, ``output_tokens``, cached ones in ``input_tokens_details``) and Anthropic
    (``input_tokens`` plus ``cache_read_input_tokens`` and ``cache_creation_input_tokens``, ``output_tokens``)."""
    if not isinstance(usage, dict):
        return None
    given, output = valid_count(usage.get("input_tokens")), valid_count(usage.get("output_tokens"))
    details = usage.get("input_tokens_details")
    cached = valid_count(details.get("cached_tokens")) if isinstance(details, dict) else None
    read = valid_count(usage.get("cache_read_input_tokens")) or 0
    written = valid_count(usage.get("cache_creation_input_tokens")) or 0
    counts: dict[str, Any] = {}
    if given is not None:
        counts["prompt_tokens"] = given + read + written  # Anthropic's input_tokens leaves the cached ones out
    if output is not None:
        counts["completion_tokens"] = output
    if cached is not None or read:
        counts["prompt_tokens_details"] = {"cached_tokens": (cached or 0) + read}
    return counts


Event = Chunk | Passed | Usage | Native | Outcome


@dataclass(slots=True, eq=False)
class EventStream:
    """A streamed answer: its events end with ``outcome``, which names who answered from the start.

    Closing ``events`` ends the upstream call and stores the usage row, however far it was read.
    """

    outcome: Outcome
    events: AsyncGenerator[Event, None]


@dataclass(slots=True, eq=False)
class Reply:
    """A non-streamed answer: the response body and who answered."""

    body: dict[str, Any]
    outcome: Outcome

"""What the serving layer hands outward: typed events and answers, never bytes or HTTP headers.

A streamed call is an :class:`EventStream`: :class:`Chunk` and :class:`Usage` events, then its :class:`Outcome`.
A non-streamed call is a :class:`Reply`. Each wire protocol maps these to its own frames (see
docs/architecture.md, "The request path").
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.routing.chain import Hop
from minigate.gateway.routing.routes import Deployment

__all__ = ["Chunk", "Event", "EventStream", "Outcome", "Reply", "Usage"]


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
class Usage:
    """The answer's token counts, as the client is sent them (checked, see ``minigate.gateway.core.tokens``)."""

    counts: dict[str, Any]


Event = Chunk | Usage | Outcome


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

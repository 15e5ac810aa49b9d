"""OpenAI's Responses API, ``/v1/responses``: translated onto chat completions (see gateway.protocols.responses)."""

from __future__ import annotations

from typing import Any

__all__ = ["responses_handlers"]


def responses_handlers() -> list[Any]:
    """Every /v1/responses route handler, for the app factory."""
    return []

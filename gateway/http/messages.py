"""Anthropic's Messages API, ``/v1/messages``: translated onto chat completions (see gateway.protocols.anthropic)."""

from __future__ import annotations

from typing import Any

__all__ = ["messages_handlers"]


def messages_handlers() -> list[Any]:
    """Every /v1/messages route handler (and the ``HEAD /`` probe), for the app factory."""
    return []

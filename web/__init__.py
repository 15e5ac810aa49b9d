"""The web UI: chat, model management and usage pages (server-rendered Jinja with vendored htmx)."""

from __future__ import annotations

from typing import Any

__all__ = ["web_routes"]


def web_routes() -> list[Any]:
    """Every route handler of the web UI, for the app factory (``gateway.app.create_app``)."""
    return []

"""The audit log page (admin): who did what, when, through which door, newest first, filtered by actor and action."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery

from minigate.gateway.runtime.gateway import Gateway
from minigate.web.render import page
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["audit_handlers"]

_PAGE = 50


@get("/audit")
async def audit_page(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    admin: NamedDependency[Session],
    actor: FromQuery[str] = "",
    action: FromQuery[str] = "",
    before: FromQuery[int | None] = None,
) -> Response[str]:
    """The newest admin actions matching the filters (``before``: older than that entry, for paging)."""
    actor, action = actor[:200], action[:200]
    rows: list[dict[str, Any]] = []
    actors: list[str] = []
    if gateway.audit is not None:
        rows = await gateway.audit.page(actor=actor, action=action, limit=_PAGE, before=before)
        actors = await gateway.audit.actors()
    return page(
        web,
        "audit.html",
        admin,
        rows=rows,
        actors=actors,
        actor=actor,
        action=action,
        next_before=rows[-1]["id"] if len(rows) == _PAGE else None,
    )


def audit_handlers() -> list[Any]:
    """The audit page route."""
    return [audit_page]

"""``GET /admin/api/audit``: the audit log of admin actions, newest first, for admin keys (recorded by
:func:`minigate.gateway.runtime.audit.audited`)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.runtime.gateway import Gateway

__all__ = ["AuditPage", "audit_handlers"]


class AuditPage(msgspec.Struct):
    """``GET /admin/api/audit``: the newest entries first; ``next_before`` pages on (None: no more)."""

    entries: list[dict[str, Any]]
    next_before: int | None


@get("/audit")
async def read_audit(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    actor: FromQuery[str] = "",
    action: FromQuery[str] = "",
    limit: FromQuery[int] = 50,
    before: FromQuery[int | None] = None,
) -> Response[bytes]:
    """The audit log, newest first, filtered by ``actor`` (exact) and ``action`` (contains); ``limit`` 1-500."""
    await gateway.authenticate_admin(request.headers.get("authorization"))
    if gateway.audit is None:
        raise GatewayError("The audit log is not open.", status=503, type="server_error")
    limit = max(1, min(limit, 500))
    rows = await gateway.audit.page(actor=actor, action=action, limit=limit, before=before)
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
    body = AuditPage(entries=rows, next_before=rows[-1]["id"] if len(rows) == limit else None)
    return Response(msgspec.json.encode(body), media_type="application/json")


def audit_handlers() -> list[Any]:
    """The audit log's admin API handlers (mounted under ``/admin/api``)."""
    return [read_audit]

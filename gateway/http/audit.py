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

__all__ = ["AuditPage", "AuditView", "audit_handlers"]


class AuditView(msgspec.Struct, kw_only=True):
    """One admin action: who (``actor``, ``actor_kind``: user, key, admin or cli), through what (``via``: web, api,
    cli), what (``action``: method and route, or the command; ``target``; ``details``: field names and safe values,
    secrets as ``"[hidden]"``), when (ISO 8601, UTC) and the status it ended with."""

    id: int
    created_at: str
    via: str
    actor: str
    actor_kind: str
    key_id: int | None
    user_id: int | None
    action: str
    target: str | None
    status: int
    details: dict[str, Any] | None
    client: str | None


class AuditPage(msgspec.Struct):
    """``GET /admin/api/audit``: the newest entries first; ``next_before`` pages on (None: no more)."""

    entries: list[AuditView]
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
    entries = [AuditView(**{**row, "created_at": row["created_at"].isoformat()}) for row in rows]
    body = AuditPage(entries=entries, next_before=rows[-1]["id"] if len(rows) == limit else None)
    return Response(msgspec.json.encode(body), media_type="application/json")


def audit_handlers() -> list[Any]:
    """The audit log's admin API handlers (mounted under ``/admin/api``)."""
    return [read_audit]

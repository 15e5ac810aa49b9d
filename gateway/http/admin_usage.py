"""The admin HTTP API for usage: ``/admin/api/usage`` (the rows, newest first, a page at a time) and
``/admin/api/usage/summary`` (totals by person, key, agent, model, provider or day).

The filters are the usage page's, with the same names (a page's query string works here), read by the same
query code (``minigate.gateway.storage.usage_query``); a value the page would quietly ignore is a 400 here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import Parameter, QueryParameter

from minigate.gateway.core.errors import InvalidRequest
from minigate.gateway.http.admin_json import json_response, require_admin
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.tables import utcnow
from minigate.gateway.storage.usage_query import RECENT_COLUMNS, Filters, recent_rows, usage_summary
from minigate.gateway.storage.users import UserStore

__all__ = ["SummaryGroup", "UsagePage", "UsageRowView", "UsageSummary", "admin_usage_handlers"]

_ID = r"^(none|[0-9]{1,12})$"
Range = Annotated[
    Literal["1h", "24h", "7d", "30d"],
    QueryParameter(name="range", description="The window's length (an hour, a day, 7 or 30 days), ending at `to`."),
]
_MOMENT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+)?(Z|[+-][0-9]{2}:?[0-9]{2})?$"
From = Annotated[
    str | None,
    QueryParameter(
        name="from",
        pattern=_MOMENT,
        description="The window's start, an ISO 8601 date or time (without an offset: UTC); overrides `range`.",
    ),
]
To = Annotated[
    str | None,
    Parameter(
        pattern=_MOMENT, description="The window's end, excluded, an ISO 8601 date or time (without an offset: UTC)."
    ),
]
Agent = Annotated[str, Parameter(max_length=300, description="An agent's name.")]
Model = Annotated[str, Parameter(max_length=300, description="provider/model: the deployment that answered.")]
Provider = Annotated[str, Parameter(max_length=300, description="The provider that answered.")]
Key = Annotated[str | None, Parameter(pattern=_ID, description="A key's id, or none: requests without a key.")]
User = Annotated[str | None, Parameter(pattern=_ID, description="A person's id, or none: requests of no person.")]
Status = Annotated[
    Literal["ok", "error", "stopped", "refused"] | None,
    Parameter(description="ok: under 400; stopped: 499; refused: 401, 403 or 429 before any upstream."),
]
Fallback = Annotated[bool, Parameter(description="Only requests that fell back at least once.")]


class UsageRowView(msgspec.Struct, kw_only=True):
    """One request, as the usage page's table and CSV show it (numbers no check would let in are null)."""

    id: int
    created_at: datetime
    key_id: int | None
    user_id: int | None
    requested_model: str
    agent: str | None
    provider: str | None
    model: str | None
    fallbacks: int
    hops: list[dict[str, Any]] | None  # each failed hop: provider, model, error, status
    status: int
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    latency_ms: float | None
    ttft_ms: float | None
    streamed: bool
    cost: float | None  # US dollars; null: nothing priced the model
    refused: int | None = None  # refused requests (401, 403, 429) this row stands for, one minute's alike ones
    client: str | None = None  # their client address
    outcome: Literal["ok", "error", "stopped", "refused"]


class UsagePage(msgspec.Struct, kw_only=True):
    """``GET /admin/api/usage``: the newest rows matching the filters; ``next_before`` is the ``before`` of the
    next page (null: this was the last)."""

    rows: list[UsageRowView]
    next_before: int | None


class SummaryGroup(msgspec.Struct, kw_only=True):
    """Totals of one group: ``group`` is the key's or person's id (null: none), the agent, ``provider/model`` or the
    provider (``(none)``: rows without one, such as refused requests), or the UTC date (``2026-12-06``); ``name`` a
    key's or person's name."""

    group: str | int | None
    name: str | None = None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float  # US dollars of the priced requests
    errors: int  # answered with a status of 400 or more, stopped answers and refused requests aside
    refused: int = 0  # refused with 401, 403 or 429 before any upstream (counted in requests too)


class UsageSummary(msgspec.Struct, kw_only=True):
    """``GET /admin/api/usage/summary``: every group, the most requests first (days in order), and the total."""

    range: str
    group_by: str
    start: datetime  # the window totalled: from ``start`` (included) to ``end`` (excluded)
    end: datetime
    total: SummaryGroup
    groups: list[SummaryGroup]


def _hops(stored: Any) -> list[dict[str, Any]] | None:
    try:
        hops = msgspec.json.decode(stored) if isinstance(stored, str) else None
    except msgspec.DecodeError:
        return None
    return hops if isinstance(hops, list) and all(isinstance(h, dict) for h in hops) else None


def _row(row: dict[str, Any]) -> UsageRowView:
    shown = {name: row[name] for name in RECENT_COLUMNS} | {"hops": _hops(row["hops"]), "outcome": row["outcome"]}
    shown["streamed"] = bool(shown["streamed"])
    return msgspec.convert(shown, UsageRowView, strict=False)


def _moment(text: str | None, param: str) -> datetime | None:
    """``text`` (ISO 8601) as a time in UTC, taken as UTC when it names no offset; a 400 naming ``param`` if it is
    no real date or time."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"`{param}` is not a date or time: {text[:40]!r}.", param=param) from None
    if not 1970 <= moment.year <= 9000:  # a window's arithmetic (range before to) stays within datetime's years
        raise InvalidRequest(f"`{param}` is out of range (years 1970 to 9000).", param=param)
    return moment


def _filters(
    range_: str,
    agent: str,
    model: str,
    provider: str,
    key: str | None,
    status: str | None,
    fallback: bool,
    user: str | None,
    from_: str | None = None,
    to: str | None = None,
) -> Filters:
    start, end = _moment(from_, "from"), _moment(to, "to")
    if start is not None and end is not None and start >= end:
        raise InvalidRequest("`from` must be before `to`.", param="from")
    return Filters(
        start=start,
        end=end,
        range=range_,
        agent=agent,
        model=model,
        provider=provider,
        key=key or "",
        status=status or "",
        fallback=fallback,
        user=user or "",
    )


@get("/usage")
async def usage_rows(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    range_: Range = "24h",
    agent: Agent = "",
    model: Model = "",
    provider: Provider = "",
    key: Key = None,
    status: Status = None,
    fallback: Fallback = False,
    user: User = None,
    from_: From = None,
    to: To = None,
    limit: Annotated[int, Parameter(ge=1, le=1000, description="Rows per page.")] = 100,
    before: Annotated[int | None, Parameter(ge=1, description="Only rows older than this id (paging).")] = None,
) -> Response[bytes]:
    """The requests matching the usage page's filters, newest first, ``limit`` at a time."""
    await require_admin(request, gateway)
    filters = _filters(range_, agent, model, provider, key, status, fallback, user, from_, to)
    rows = [_row(r) for r in await recent_rows(gateway.database, filters, limit=limit, before=before)]
    return json_response(UsagePage(rows=rows, next_before=rows[-1].id if len(rows) == limit else None))


@get("/usage/summary")
async def usage_totals(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    range_: Range = "24h",
    agent: Agent = "",
    model: Model = "",
    provider: Provider = "",
    key: Key = None,
    status: Status = None,
    fallback: Fallback = False,
    user: User = None,
    from_: From = None,
    to: To = None,
    group_by: Annotated[
        Literal["person", "key", "agent", "model", "provider", "day"], Parameter(description="What to total by.")
    ] = "model",
) -> Response[bytes]:
    """Requests, tokens, cost and errors of the rows matching the filters, by ``group_by``, and in all."""
    await require_admin(request, gateway)
    filters = _filters(range_, agent, model, provider, key, status, fallback, user, from_, to)
    found = await usage_summary(gateway.database, filters, group_by)
    names: dict[int, str] = {}
    if group_by == "key":
        names = {k.id: k.name for k in await gateway.keys.list()}
    elif group_by == "person":
        names = {p.id: p.name for p in await UserStore(gateway.database).list()}
    groups = [
        SummaryGroup(
            group=s.group,
            name=names.get(s.group) if isinstance(s.group, int) else None,
            requests=s.requests,
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
            total_tokens=s.total_tokens,
            cost=s.cost,
            errors=s.errors,
            refused=s.refused,
        )
        for s in found
    ]
    total = SummaryGroup(
        group=None,
        name="total",
        requests=sum(g.requests for g in groups),
        prompt_tokens=sum(g.prompt_tokens for g in groups),
        completion_tokens=sum(g.completion_tokens for g in groups),
        total_tokens=sum(g.total_tokens for g in groups),
        cost=sum(g.cost for g in groups),
        errors=sum(g.errors for g in groups),
        refused=sum(g.refused for g in groups),
    )
    now = utcnow()
    window = {"start": filters.since(now), "end": filters.end or now}
    return json_response(UsageSummary(range=range_, group_by=group_by, **window, total=total, groups=groups))


def admin_usage_handlers() -> list[Any]:
    """The usage handlers (mounted under ``/admin/api`` with the others)."""
    return [usage_rows, usage_totals]

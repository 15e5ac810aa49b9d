"""The usage page: totals, charts over time, recent requests with filters, CSV export.

An admin sees everyone's requests (and may filter and group them by person); a person only their own.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream
from markupsafe import Markup

from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.usage_query import (
    CSV_COLUMNS,
    DIMENSIONS,
    RANGES,
    Filters,
    Stats,
    recent_rows,
    usage_stats,
)
from minigate.gateway.storage.users import UserStore
from minigate.web.auth import LoginRequired
from minigate.web.charts import Series, line_chart
from minigate.web.render import SECURITY_HEADERS, page
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["usage_handlers"]


def _filters(
    member: Session,
    range_: str,
    by: str,
    agent: str,
    model: str,
    provider: str,
    key: str,
    status: str,
    fallback: str,
    user: str,
) -> Filters:
    if not member.admin:  # a person sees only their own requests, whatever the address asks for
        if member.user_id is None:  # a member who is not an admin is a person; never "everyone" for anyone else
            raise LoginRequired()
        user, by = str(member.user_id), ("agent" if by == "person" else by)
    return Filters(
        range=range_ if range_ in RANGES else "24h",
        by=by if by in DIMENSIONS else "agent",
        agent=agent[:200],
        model=model[:300],
        provider=provider[:200],
        key=key if key == "none" or key.isdigit() else "",
        status=status if status in ("ok", "error", "stopped", "refused") else "",
        fallback=fallback in ("1", "on", "true"),
        user=user if user == "none" or user.isdigit() else "",
    )


def _charts(stats: Stats, filters: Filters) -> list[Markup]:
    label = RANGES[filters.range][2]
    groups = stats.groups
    per = stats.per_bucket_group
    return [
        line_chart(
            "c-requests",
            f"Requests by {filters.by}, {label}",
            stats.labels,
            [Series(g, [float(t.requests) for t in per[g]]) for g in groups],
        ),
        line_chart(
            "c-tokens",
            f"Tokens by {filters.by}, {label}",
            stats.labels,
            [Series(g, [float(t.tokens) for t in per[g]]) for g in groups],
        ),
        line_chart(
            "c-cost",
            f"Cost (US dollars) by {filters.by}, {label}",
            stats.labels,
            [Series(g, [t.cost for t in per[g]]) for g in groups],
            integer=False,
        ),
        line_chart(
            "c-latency",
            f"Latency p50 and p95 (ms, stopped answers left out), {label}",
            stats.labels,
            [
                Series("p50", [t.percentile(0.5) for t in stats.per_bucket]),
                Series("p95", [t.percentile(0.95) for t in stats.per_bucket]),
            ],
            unit=" ms",
            integer=False,
        ),
        line_chart(
            "c-errors",
            f"Errors and fallbacks, stopped answers and refused requests, {label}",
            stats.labels,
            [
                Series("errors", [float(t.errors) for t in stats.per_bucket]),
                Series("with fallbacks", [float(t.fallbacks) for t in stats.per_bucket]),
                Series("stopped", [float(t.stopped) for t in stats.per_bucket]),
                Series("refused", [float(t.refused) for t in stats.per_bucket]),
            ],
        ),
    ]


@get("/usage")
async def usage_page(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    member: NamedDependency[Session],
    range_: Annotated[str, QueryParameter(name="range")] = "24h",
    by: FromQuery[str] = "agent",
    agent: FromQuery[str] = "",
    model: FromQuery[str] = "",
    provider: FromQuery[str] = "",
    key: FromQuery[str] = "",
    status: FromQuery[str] = "",
    fallback: FromQuery[str] = "",
    user: FromQuery[str] = "",
    before: FromQuery[int | None] = None,
) -> Response[str]:
    """Totals and charts for the range, and the newest requests matching the filters (a person's: their own)."""
    filters = _filters(member, range_, by, agent, model, provider, key, status, fallback, user)
    keys = await gateway.keys.list(user_id=None if member.admin else member.user_id)
    key_names = {k.id: k.name for k in keys}
    people = await UserStore(gateway.database).list() if member.admin else []
    user_names = {p.id: p.name for p in people}
    stats = await usage_stats(gateway.database, filters, key_names, user_names)
    rows = await recent_rows(gateway.database, filters, before=before)
    return page(
        web,
        "usage.html",
        member,
        filters=filters,
        ranges=RANGES,
        dimensions=DIMENSIONS,
        stats=stats,
        charts=_charts(stats, filters),
        rows=rows,
        group_rows=sorted(stats.per_group.items(), key=lambda item: -item[1].requests),
        key_names=key_names,
        keys=keys,
        people=people,
        user_names=user_names,
        agents=sorted(gateway.config.agents),
        providers=sorted(gateway.providers),
        models=sorted({i for i, kind, _ in gateway.routes.listing() if kind == "model"}),
        next_before=rows[-1]["id"] if len(rows) == 50 else None,
    )


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet would run a cell starting with these as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@get("/usage.csv")
async def usage_csv(
    gateway: NamedDependency[Gateway],
    member: NamedDependency[Session],
    range_: Annotated[str, QueryParameter(name="range")] = "24h",
    agent: FromQuery[str] = "",
    model: FromQuery[str] = "",
    provider: FromQuery[str] = "",
    key: FromQuery[str] = "",
    status: FromQuery[str] = "",
    fallback: FromQuery[str] = "",
    user: FromQuery[str] = "",
) -> Stream:
    """Every request of the range matching the filters (a person's: their own), newest first, as CSV."""
    filters = _filters(member, range_, "agent", agent, model, provider, key, status, fallback, user)

    async def lines() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        before: int | None = None
        while True:
            rows = await recent_rows(gateway.database, filters, limit=2000, before=before)
            for row in rows:
                writer.writerow([_cell(row[name]) for name in CSV_COLUMNS])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(rows) < 2000:
                return
            before = rows[-1]["id"]

    return Stream(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={
            **SECURITY_HEADERS,
            "content-disposition": f'attachment; filename="minigate-usage-{filters.range}.csv"',
        },
    )


def usage_handlers() -> list[Any]:
    """The usage page routes."""
    return [usage_page, usage_csv]

"""Usage queries for the usage page and ``/admin/api/usage``: the filters, one grouped SQL query per page, totals by
group, and the rows themselves.

Percentiles come from a latency histogram the database builds in one pass (bins of ``ln(ms + 1) * 12``, about
9 % wide), not from every latency sent to Python; no stored value can break the page. Answers the client stopped
are counted apart (neither errors nor in the percentiles), and so are refused requests (one row per minute of
alike ones, its ``refused`` column their number: see ``minigate.gateway.ops.refusals``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Integer, Select, Table, case, func, literal, literal_column, select
from sqlalchemy import cast as sql_cast

from minigate.gateway.core.tokens import MAX_TOTAL, valid_count
from minigate.gateway.storage import Database
from minigate.gateway.storage.sql import count_sum, epoch_bucket, floor_int
from minigate.gateway.storage.tables import UsageRow, utcnow
from minigate.gateway.storage.usage import STOPPED, outcome

__all__ = [
    "CSV_COLUMNS",
    "DIMENSIONS",
    "RANGES",
    "RECENT_COLUMNS",
    "SUMMARY_GROUPS",
    "Filters",
    "Stats",
    "Summed",
    "Totals",
    "recent_rows",
    "usage_stats",
    "usage_summary",
]

_USAGE = cast(Table, UsageRow.__table__)
c = _USAGE.c

# range name -> (seconds covered, seconds per bucket, label)
RANGES: dict[str, tuple[int, int, str]] = {
    "1h": (3600, 60, "last hour, per minute"),
    "24h": (86400, 1800, "last 24 hours, per 30 minutes"),
    "7d": (7 * 86400, 3 * 3600, "last 7 days, per 3 hours"),
    "30d": (30 * 86400, 86400, "last 30 days, per day"),
}
DIMENSIONS = ("agent", "model", "provider", "key", "person")
SUMMARY_GROUPS = (*DIMENSIONS, "day")  # what /admin/api/usage/summary may group by
_BIN_SCALE = 12.0
_TOP_GROUPS = 6
_MAX_MS = 1e9  # a stored latency beyond this (or negative, or NaN) is not one: it gets no bin
_INT32 = 2**31 - 1  # PostgreSQL's INTEGER: a larger key id in a filter matches nothing, and must not be sent
_INT64 = 2**63 - 1  # the id column's BIGINT


def _group_expr(dimension: str) -> ColumnElement[Any]:
    if dimension == "model":
        return func.coalesce(c.provider + literal("/") + c.model, "(none)")
    if dimension == "provider":
        return func.coalesce(c.provider, "(none)")
    if dimension == "key":
        return sql_cast(c.key_id, Integer)
    if dimension == "person":
        return sql_cast(c.user_id, Integer)
    return func.coalesce(c.agent, "(none)")


@dataclass(frozen=True, slots=True)
class Filters:
    """What the page shows: a time range, a grouping and optional filters on the rows."""

    range: str = "24h"
    by: str = "agent"
    agent: str = ""
    model: str = ""  # provider/model
    provider: str = ""
    key: str = ""  # key id, or "none" for requests without a key
    status: str = ""  # "", "ok", "error", "stopped" or "refused"
    fallback: bool = False
    user: str = ""  # a person's id, or "none" for requests of no person (a person's own page: always theirs)
    start: datetime | None = None  # the window's start (aware); None: ``range`` before its end
    end: datetime | None = None  # the window's end, excluded (aware); None: now

    def since(self, now: datetime) -> datetime:
        """The start of the window."""
        if self.start is not None:
            return self.start
        return (self.end or now) - timedelta(seconds=RANGES[self.range][0])

    def where(self, stmt: Select[Any], now: datetime) -> Select[Any]:
        """``stmt`` restricted to the window and the filters."""
        stmt = stmt.where(c.created_at >= self.since(now))
        if self.end is not None:
            stmt = stmt.where(c.created_at < self.end)
        if self.agent:
            stmt = stmt.where(c.agent == self.agent)
        if self.model:
            provider, _, model = self.model.partition("/")
            stmt = stmt.where(c.provider == provider, c.model == model)
        if self.provider:
            stmt = stmt.where(c.provider == self.provider)
        if self.key == "none":
            stmt = stmt.where(c.key_id.is_(None))
        elif self.key.isdigit():
            key_id = int(self.key[:12])  # digits only; beyond any key id, the filter matches no row
            stmt = stmt.where(c.key_id == key_id) if key_id <= _INT32 else stmt.where(c.id.is_(None))
        if self.user == "none":
            stmt = stmt.where(c.user_id.is_(None))
        elif self.user.isdigit():
            user_id = int(self.user[:12])
            stmt = stmt.where(c.user_id == user_id) if user_id <= _INT32 else stmt.where(c.id.is_(None))
        if self.status == "ok":
            stmt = stmt.where(c.status < 400)
        elif self.status == "error":
            stmt = stmt.where(c.status >= 400, c.status != STOPPED, c.refused.is_(None))
        elif self.status == "stopped":
            stmt = stmt.where(c.status == STOPPED)
        elif self.status == "refused":
            stmt = stmt.where(c.refused.is_not(None))
        if self.fallback:
            stmt = stmt.where(c.fallbacks > 0)
        return stmt


@dataclass(slots=True)
class Totals:
    """Aggregates of one group (or of everything). Stopped answers are neither errors nor in the latency
    histogram: their latency is how long the client read before it stopped. Refused requests count as requests
    (``refused`` of them), never as errors, tokens or latency."""

    requests: int = 0
    tokens: int = 0
    errors: int = 0
    fallbacks: int = 0
    stopped: int = 0
    histogram: dict[int, int] = field(default_factory=dict)
    cost: float = 0.0  # US dollars of the priced requests
    refused: int = 0

    def add(
        self,
        requests: int,
        tokens: int,
        errors: int,
        fallbacks: int,
        latency_bin: int | None,
        stopped: int = 0,
        cost: float = 0.0,
        refused: int = 0,
    ) -> None:
        """Count one row of the grouped query (``latency_bin`` None: no valid latency, or stopped answers)."""
        self.cost += cost
        self.refused += refused
        self.requests += requests
        self.tokens += tokens
        self.errors += errors
        self.fallbacks += fallbacks
        self.stopped += stopped
        if latency_bin is not None:
            self.histogram[latency_bin] = self.histogram.get(latency_bin, 0) + requests

    def percentile(self, q: float) -> float | None:
        """The latency (ms) under which a fraction ``q`` of the requests (with a valid latency) finished."""
        timed = sum(self.histogram.values())
        if not timed:
            return None
        wanted, seen = q * timed, 0
        for latency_bin in sorted(self.histogram):
            seen += self.histogram[latency_bin]
            if seen >= wanted:
                return math.exp((latency_bin + 0.5) / _BIN_SCALE) - 1
        return None


@dataclass(slots=True)
class Stats:
    """Everything the charts and the totals table need."""

    labels: list[str]
    groups: list[str]  # the largest groups, then "other" when there are more
    overall: Totals
    per_group: dict[str, Totals]
    per_bucket: list[Totals]
    per_bucket_group: dict[str, list[Totals]]


def _label(start: datetime, bucket: int) -> str:
    return start.strftime("%H:%M" if bucket < 86400 else "%b %d")


async def usage_stats(
    database: Database, filters: Filters, key_names: dict[int, str], user_names: dict[int, str] | None = None
) -> Stats:
    """Aggregate the rows in the range, by time bucket and by the chosen dimension."""
    now = utcnow()
    seconds, bucket, _ = RANGES[filters.range]
    count = seconds // bucket
    first = int(filters.since(now).timestamp()) // bucket
    time_bucket = epoch_bucket(c.created_at, bucket).label("b")
    group = _group_expr(filters.by).label("g")
    served = c.refused.is_(None)
    valid_latency = c.latency_ms.between(0, literal_column(repr(_MAX_MS))) & (c.status != STOPPED) & served
    latency_bin = case((valid_latency, floor_int(func.ln(c.latency_ms + 1) * _BIN_SCALE))).label("l")
    stmt = select(
        time_bucket,
        group,
        latency_bin,
        func.sum(func.coalesce(c.refused, 1)).label("n"),  # a refused row stands for ``refused`` requests
        count_sum(c.total_tokens, MAX_TOTAL).label("t"),
        func.sum(case(((c.status >= 400) & (c.status != STOPPED) & served, 1), else_=0)).label("e"),
        func.sum(case((c.fallbacks > 0, 1), else_=0)).label("f"),
        func.sum(case((c.status == STOPPED, 1), else_=0)).label("s"),
        func.sum(case((c.cost.between(0, literal_column("1e9")), c.cost), else_=0.0)).label(
            "d"
        ),  # no stored value breaks it
        func.coalesce(func.sum(c.refused), 0).label("r"),
    )
    # Grouped by the output columns' names: the group expression holds bound values ("(none)"), and PostgreSQL
    # would take the same expression repeated in GROUP BY, with parameters of its own, for a different one.
    stmt = filters.where(stmt, now).group_by(literal_column("b"), literal_column("g"), literal_column("l"))
    async with database.engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()

    def name(value: Any) -> str:
        if filters.by == "key":
            return "no key (bootstrap / web)" if value is None else key_names.get(int(value), f"key {value}")
        if filters.by == "person":
            return "nobody (admin)" if value is None else (user_names or {}).get(int(value), f"person {value}")
        return str(value)

    names = {g: name(g) for g in {row[1] for row in rows}}
    overall, per_group = Totals(), {label: Totals() for label in names.values()}
    for _, g, lat, n, t, e, f, s, d, r in rows:
        overall.add(n, int(t), e, f, lat, s, float(d or 0.0), int(r))
        per_group[names[g]].add(n, int(t), e, f, lat, s, float(d or 0.0), int(r))
    ranked = sorted(per_group, key=lambda k: -per_group[k].requests)
    groups = ranked[:_TOP_GROUPS] + (["other"] if len(ranked) > _TOP_GROUPS else [])
    target = {g: (label if label in groups else "other") for g, label in names.items()}
    per_bucket = [Totals() for _ in range(count)]
    per_bucket_group = {g: [Totals() for _ in range(count)] for g in groups}
    for b, g, lat, n, t, e, f, s, d, r in rows:
        index = min(max(b - first - 1, 0), count - 1)
        per_bucket[index].add(n, int(t), e, f, lat, s, float(d or 0.0), int(r))
        per_bucket_group[target[g]][index].add(n, int(t), e, f, lat, s, float(d or 0.0), int(r))
    starts = [datetime.fromtimestamp((first + 1 + i) * bucket, now.tzinfo) for i in range(count)]
    return Stats([_label(s, bucket) for s in starts], groups, overall, per_group, per_bucket, per_bucket_group)


RECENT_COLUMNS = (
    "id", "created_at", "key_id", "user_id", "requested_model", "agent", "provider", "model", "fallbacks", "hops",
    "status", "error", "prompt_tokens", "completion_tokens", "total_tokens", "latency_ms", "ttft_ms", "streamed",
    "cost", "refused", "client",
)  # fmt: skip
CSV_COLUMNS = (*RECENT_COLUMNS, "outcome")  # "ok", "stopped", "refused" or "error" (see storage.usage.outcome)


async def recent_rows(
    database: Database, filters: Filters, *, limit: int = 50, before: int | None = None
) -> list[dict[str, Any]]:
    """The newest rows matching the filters (``before``: only rows with a smaller id, for paging)."""
    stmt = select(*(getattr(c, name) for name in RECENT_COLUMNS))
    stmt = filters.where(stmt, utcnow())
    if before is not None:  # an id column holds 64 bits: a page link with more digits than that means "all"
        stmt = stmt.where(c.id < min(max(before, -_INT64), _INT64))
    stmt = stmt.order_by(c.id.desc()).limit(limit)
    async with database.engine.connect() as conn:
        return [_shown(dict(row)) for row in (await conn.execute(stmt)).mappings()]


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the page and the CSV show it: numbers no check would let in (written before there were
    checks, or by hand; SQLite even keeps text in an INTEGER column) are shown as missing."""
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        row[name] = valid_count(row[name], MAX_TOTAL)
    for name in ("latency_ms", "ttft_ms"):
        value = row[name]
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= _MAX_MS
        row[name] = value if ok else None
    cost = row["cost"]
    row["cost"] = cost if isinstance(cost, float | int) and not isinstance(cost, bool) and 0 <= cost <= 1e9 else None
    for name in ("status", "fallbacks"):
        row[name] = row[name] if type(row[name]) is int else 0
    refused = row["refused"]
    row["refused"] = refused if type(refused) is int and refused > 0 else None
    row["outcome"] = outcome(row["status"], row["refused"])
    return row


@dataclass(frozen=True, slots=True)
class Summed:
    """Totals of one group of :func:`usage_summary` (``group`` None: rows without one, such as no key)."""

    group: str | int | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    errors: int
    refused: int = 0  # refused requests (401, 403, 429), counted in ``requests`` too


async def usage_summary(database: Database, filters: Filters, by: str) -> list[Summed]:
    """Totals of the rows matching ``filters`` for each value of ``by`` (one of :data:`SUMMARY_GROUPS`; ``day``: the
    UTC date), the most requests first; ids for keys and people, which the caller names."""
    if by not in SUMMARY_GROUPS:
        raise ValueError(f"cannot group by {by!r}")
    group = (epoch_bucket(c.created_at, 86400) if by == "day" else _group_expr(by)).label("g")
    valid_cost = case((c.cost.between(0, literal_column("1e9")), c.cost), else_=0.0)
    stmt = select(
        group,
        func.sum(func.coalesce(c.refused, 1)).label("n"),  # a refused row stands for ``refused`` requests
        count_sum(c.prompt_tokens, MAX_TOTAL),
        count_sum(c.completion_tokens, MAX_TOTAL),
        count_sum(c.total_tokens, MAX_TOTAL),
        func.sum(valid_cost),
        func.sum(case(((c.status >= 400) & (c.status != STOPPED) & c.refused.is_(None), 1), else_=0)),
        func.coalesce(func.sum(c.refused), 0),
    )
    stmt = filters.where(stmt, utcnow()).group_by(literal_column("g"))  # by name: see usage_stats
    async with database.engine.connect() as conn:
        rows: list[Any] = list((await conn.execute(stmt)).all())

    def named(value: Any) -> str | int | None:
        if by == "day":
            return datetime.fromtimestamp(int(value) * 86400, UTC).date().isoformat()
        return None if value is None else (int(value) if by in ("key", "person") else str(value))

    found = [
        Summed(named(g), int(n), int(p), int(o), int(t), float(d or 0.0), int(e or 0), int(r))
        for g, n, p, o, t, d, e, r in rows
    ]
    return sorted(found, key=lambda s: (s.group if by == "day" else -s.requests, str(s.group)))

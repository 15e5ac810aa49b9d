"""SQL expressions that differ between SQLite and PostgreSQL, each written once per dialect here.

Integer arguments render as literals, so the same expression in ``SELECT`` and ``GROUP BY`` compiles to the same
text (with bound parameters PostgreSQL sees two expressions and refuses the grouping).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, Table, case, func, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["count_sum", "epoch_bucket", "floor_int", "greatest", "upsert"]

# julianday() of 1970-01-01 00:00:00 UTC.
_UNIX_EPOCH_JULIAN_DAY = 2440587.5


class epoch_bucket(FunctionElement[int]):
    """``floor(seconds since 1970 of column / seconds)``: the time bucket of a timestamp, as an integer."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_bucket"

    def __init__(self, column: ColumnElement[Any], seconds: int) -> None:
        """Buckets of ``seconds`` (a positive integer) for the timestamps in ``column``."""
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
            raise ValueError(f"bucket length must be a positive integer, not {seconds!r}")
        super().__init__(column, literal_column(str(seconds)))


class floor_int(FunctionElement[int]):
    """``floor(expression)`` as an integer (for non-negative numbers on SQLite, which truncates)."""

    type = Integer()
    inherit_cache = True
    name = "floor_int"


def _args(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> list[str]:
    return [compiler.process(clause, **kw) for clause in element.clauses]


@compiles(epoch_bucket)
def _epoch_bucket(element: epoch_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    # PostgreSQL (and the SQL standard): EXTRACT(EPOCH ...) gives seconds since 1970 of a timestamptz.
    column, seconds = _args(element, compiler, **kw)
    return f"CAST(floor(EXTRACT(EPOCH FROM {column}) / {seconds}) AS BIGINT)"


@compiles(epoch_bucket, "sqlite")
def _epoch_bucket_sqlite(element: epoch_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    # Timestamps are after 1970, so truncating is flooring; "/" of two integers is integer division.
    column, seconds = _args(element, compiler, **kw)
    return f"(CAST((julianday({column}) - {_UNIX_EPOCH_JULIAN_DAY}) * 86400 AS INTEGER) / {seconds})"


@compiles(floor_int)
def _floor_int(element: floor_int, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = _args(element, compiler, **kw)
    return f"CAST(floor({value}) AS INTEGER)"


@compiles(floor_int, "sqlite")
def _floor_int_sqlite(element: floor_int, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's CAST truncates towards zero: the floor of a non-negative number, without needing floor(),
    # which only SQLite builds with the math functions have.
    (value,) = _args(element, compiler, **kw)
    return f"CAST({value} AS INTEGER)"


class greatest(FunctionElement[Any]):
    """The larger of two values: ``GREATEST`` on PostgreSQL, the two-argument scalar ``max`` on SQLite."""

    inherit_cache = True
    name = "greatest"

    def __init__(self, a: ColumnElement[Any], b: ColumnElement[Any]) -> None:
        """``greatest(a, b)``, typed like ``a``."""
        super().__init__(a, b)
        self.type = a.type


@compiles(greatest)
def _greatest(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = _args(element, compiler, **kw)
    return f"GREATEST({a}, {b})"


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = _args(element, compiler, **kw)
    return f"max({a}, {b})"


def count_sum(column: ColumnElement[Any], top: int) -> ColumnElement[Any]:
    """The sum of the valid counts in ``column`` (0 to ``top``), 0 when there are none.

    A stored value no check would let in (written before there were checks, or by hand) is left out like a
    missing one: a negative count would make the sum lie, and two of 2**63-1 overflow SQLite's ``sum()``, which
    raises rather than wrap. Text stored in a SQLite INTEGER column is outside any numeric range, so left out too.
    """
    return func.coalesce(func.sum(case((column.between(0, literal_column(str(top))), column))), 0)


async def upsert(
    conn: AsyncConnection, table: Table, values: dict[str, Any], keys: list[str], merged: Callable[[Any], Any]
) -> None:
    """Insert ``values`` into ``table``, or, when a row with the same ``keys`` exists, set it to
    ``merged(excluded)`` (``excluded``: the row that was to be inserted): one atomic statement on either backend."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        pg = postgresql.insert(table).values(**values)
        stmt: Any = pg.on_conflict_do_update(index_elements=keys, set_=merged(pg.excluded))
    elif dialect == "sqlite":
        lite = sqlite.insert(table).values(**values)
        stmt = lite.on_conflict_do_update(index_elements=keys, set_=merged(lite.excluded))
    else:
        raise NotImplementedError(f"upserts need SQLite or PostgreSQL, not {dialect}")
    await conn.execute(stmt)

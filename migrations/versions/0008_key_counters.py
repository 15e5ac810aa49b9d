"""Key limits shared by replicas: what each key used per minute, day and month, and each replica's calls in flight.

``key_counters``: one row per key and fixed window (``m:<minute since 1970>``, ``d:YYYY-MM-DD``, ``M:YYYY-MM``, UTC)
with requests, tokens and US dollars, grown by atomic upserts. ``key_leases``: per key and replica, the calls that
replica has in flight, refreshed every sync (a replica that stops refreshing is no longer counted).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``key_counters`` and ``key_leases``."""
    op.create_table(
        "key_counters",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(24), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("ends_epoch", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "period", name="pk_key_counters"),
    )
    op.create_table(
        "key_leases",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("replica", sa.String(64), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("until_epoch", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "replica", name="pk_key_leases"),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("key_leases")
    op.drop_table("key_counters")

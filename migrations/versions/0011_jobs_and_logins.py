"""Admin jobs and login throttling shared by workers and replicas.

``jobs``: one row per admin job (model pull or import) with its state, last progress lines (JSON) and the running
process's heartbeat (``beat_epoch``), so any worker answers ``GET /admin/api/jobs/{id}``. ``login_failures``: per
client address (or the counter all forwarded logins share), the failed logins since the window's first one.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``jobs`` and ``login_failures``."""
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_epoch", sa.Float(), nullable=False),
        sa.Column("finished_epoch", sa.Float(), nullable=True),
        sa.Column("beat_epoch", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("progress", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_table(
        "login_failures",
        sa.Column("address", sa.String(128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("since_epoch", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("address", name="pk_login_failures"),
    )
    op.create_index("ix_login_failures_since_epoch", "login_failures", ["since_epoch"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_login_failures_since_epoch", table_name="login_failures")
    op.drop_table("login_failures")
    op.drop_table("jobs")

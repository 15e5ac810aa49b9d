"""Cooldowns shared by every replica: one row per deployment that is (or lately was) cooling down.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``cooldowns``."""
    op.create_table(
        "cooldowns",
        sa.Column("ref", sa.String(300), nullable=False),
        # Wall-clock seconds since 1970 (every replica compares it with its own clock).
        sa.Column("until_epoch", sa.Float(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ref", name="pk_cooldowns"),
    )


def downgrade() -> None:
    """Drop ``cooldowns``."""
    op.drop_table("cooldowns")

"""A person's own policy: limits and budgets over all their keys and their web chat.

``users.policy`` holds the same JSON as ``api_keys.policy`` (None: no limits of their own); what they use is counted
in ``key_counters`` under the negative id ``-users.id``, beside their keys.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``users.policy``."""
    op.add_column("users", sa.Column("policy", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("users") as batch:
        batch.drop_column("policy")

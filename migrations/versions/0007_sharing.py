"""Sharing one box: people with accounts, keys that belong to a person and carry a policy, the cost of each request.

``users``: a person with a password (a slow salted hash) and an admin flag. ``api_keys.user_id``: whose key it is
(None: the admin's, as before); ``api_keys.policy``: JSON (allowed models, remote or not, rate limits, budgets);
``api_keys.expires_at``. ``usage.cost``: what the request cost in US dollars (None: unpriced);
``usage.user_id``: whose it was. ``web_sessions.user_id``: the person logged in.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``users``; add the key, usage and session columns."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.add_column("api_keys", sa.Column("user_id", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("policy", sa.Text(), nullable=True))
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.add_column("usage", sa.Column("cost", sa.Float(), nullable=True))
    op.add_column("usage", sa.Column("user_id", sa.Integer(), nullable=True))
    op.create_index("ix_usage_user_id", "usage", ["user_id"])
    op.add_column("web_sessions", sa.Column("user_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_column("user_id")
    op.drop_index("ix_usage_user_id", table_name="usage")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("user_id")
        batch.drop_column("cost")
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("policy")
        batch.drop_column("user_id")
    op.drop_table("users")

"""Chat: per-conversation top_p and repetition penalty, branches and versions of messages, attached images.

Messages form a tree: ``parent_id`` is the message a message follows (None for the first), so an edited user
message or a regenerated answer is a sibling of the one it replaces; ``conversations.current_message_id`` is the
leaf the page shows. Existing conversations become one straight branch.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the columns and ``message_images``; link existing messages in order."""
    op.add_column("conversations", sa.Column("top_p", sa.Float(), nullable=True))
    op.add_column("conversations", sa.Column("repetition_penalty", sa.Float(), nullable=True))
    op.add_column("conversations", sa.Column("current_message_id", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("parent_id", sa.Integer(), nullable=True))
    op.create_index("ix_messages_parent_id", "messages", ["parent_id"])
    op.execute(
        "UPDATE messages SET parent_id = (SELECT MAX(m2.id) FROM messages m2 "
        "WHERE m2.conversation_id = messages.conversation_id AND m2.id < messages.id)"
    )
    op.execute(
        "UPDATE conversations SET current_message_id = (SELECT MAX(m.id) FROM messages m "
        "WHERE m.conversation_id = conversations.id)"
    )
    op.create_table(
        "message_images",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_message_images_message_id_messages", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_message_images"),
    )
    op.create_index("ix_message_images_message_id", "message_images", ["message_id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_index("ix_message_images_message_id", table_name="message_images")
    op.drop_table("message_images")
    op.drop_index("ix_messages_parent_id", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("parent_id")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("current_message_id")
        batch.drop_column("repetition_penalty")
        batch.drop_column("top_p")

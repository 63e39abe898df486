"""admin sessions: the sales dashboard's logins (revoked at logout), and indexes for its
period queries

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_sessions")),
    )
    op.create_index("ix_admin_sessions_key_fingerprint", "admin_sessions", ["key_fingerprint"])
    op.create_index("ix_conversations_started", "conversations", ["started_at", "channel"])
    op.create_index("ix_messages_created", "messages", ["created_at", "channel", "direction"])
    op.create_index("ix_handoffs_requested", "handoffs", ["requested_at"])


def downgrade() -> None:
    op.drop_index("ix_handoffs_requested", table_name="handoffs")
    op.drop_index("ix_messages_created", table_name="messages")
    op.drop_index("ix_conversations_started", table_name="conversations")
    op.drop_index("ix_admin_sessions_key_fingerprint", table_name="admin_sessions")
    op.drop_table("admin_sessions")

"""messages: no index on every message's status

Every message passes through the status index several times (stored, answered; a reply
pending, then sent): pages written on each turn's commits (on SQLite 63 page writes a turn
with it, 56 without). Its one reader left wants unanswered inbound messages, which
``ix_messages_unanswered`` holds.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_messages_status", table_name="messages")


def downgrade() -> None:
    op.create_index("ix_messages_status", "messages", ["status"])

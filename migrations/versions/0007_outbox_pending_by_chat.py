"""outbox: a chat's items still to send, found by their chat address

Every turn reads its chat's pending outbox items. By the status index alone that read walked
every pending item of every chat: 6 us with none waiting, 136 us with 1,000 (a burst held back
by Telegram's send budget). A partial index on the chat address keeps it constant.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_pending_chat",
        "outbox",
        ["channel", "chat_key", "thread", "id"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_pending_chat", table_name="outbox")

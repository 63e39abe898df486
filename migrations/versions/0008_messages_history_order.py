"""messages: an index in the order the customer saw the conversation

Every turn reads the conversation's last messages in that order (each reply right after the
message it answers). Without an index on that order, the read sorted the whole conversation:
54 us at 81 messages, 344 us at 1,000, 1.6 ms at 5,000.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_history",
        "messages",
        ["conversation_id", sa.text("coalesce(reply_to_id, id)"), "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_messages_history", table_name="messages")

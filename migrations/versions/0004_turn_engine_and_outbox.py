"""turn engine and outbox: the job queue's schema (Postgres), one outbox for everything the bot
sends, and each message's own sender

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _apply_procrastinate_schema() -> None:
    """Turns run as procrastinate jobs on Postgres. Its schema (tables, types, functions) is one
    SQL script of many statements, which asyncpg runs only through its simple-query path."""
    from procrastinate.schema import SchemaManager
    from sqlalchemy.util import await_only

    raw = op.get_bind().connection.driver_connection
    assert raw is not None
    await_only(raw.execute(SchemaManager.get_schema()))
    # The job fetch runs as a prepared plan inside a function. After a few calls Postgres may
    # switch to a generic plan, which with statistics from a nearly empty table reads every
    # waiting job on every fetch (120 ms instead of 2 ms with 3,000 jobs waiting, measured by
    # bench/scale.py): plan each call for its own arguments instead.
    op.execute(
        "ALTER FUNCTION procrastinate_fetch_job_v2(character varying[], bigint)"
        " SET plan_cache_mode = force_custom_plan"
    )
    # A busy queue churns this table; fresh statistics keep the job fetch on its indexes.
    op.execute(
        "ALTER TABLE procrastinate_jobs SET (autovacuum_analyze_scale_factor = 0.01,"
        " autovacuum_vacuum_scale_factor = 0.02)"
    )


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_messages_user_id_users"),
            "users",
            ["user_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("edit_of", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "answer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_messages_answer_id_messages"),
            "messages",
            ["answer_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.execute(
        "UPDATE messages SET answer_id = (SELECT MIN(r.id) FROM messages r"
        " WHERE r.reply_to_id = messages.id AND r.direction = 'out')"
        " WHERE direction = 'in' AND status = 'answered'"
    )
    # Inbound messages already name their sender in the author column ("user:<id>").
    cast_type = "INTEGER" if bind.dialect.name == "sqlite" else "BIGINT"
    op.execute(
        f"UPDATE messages SET user_id = CAST(substr(author, 6) AS {cast_type})"
        " WHERE direction = 'in' AND author LIKE 'user:%'"
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "broadcast_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("chat_key", sa.String(length=128), nullable=False),
        sa.Column("thread", sa.String(length=128), server_default="", nullable=False),
        sa.Column("reply_to", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name=op.f("fk_outbox_broadcast_id_broadcasts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_outbox_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_outbox_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_edit_of",
            ["conversation_id", "edit_of"],
            unique=False,
            sqlite_where=sa.text("edit_of IS NOT NULL"),
            postgresql_where=sa.text("edit_of IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_messages_unanswered",
            ["conversation_id", "id"],
            unique=False,
            sqlite_where=sa.text("status = 'received'"),
            postgresql_where=sa.text("status = 'received'"),
        )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        # A chat's conversations, open or closed: how a turn finds its chat's next message.
        batch_op.create_index(
            "ix_conversations_chat", ["channel", "chat_key", "thread"], unique=False
        )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_status", ["status", "id"], unique=False)
        batch_op.create_index("ix_outbox_conversation", ["conversation_id", "id"], unique=False)
    # Replies persisted before this revision and never delivered go out through the outbox.
    op.execute(
        "INSERT INTO outbox (conversation_id, message_id, kind, channel, chat_key, thread,"
        " payload, status, attempts, created_at)"
        " SELECT m.conversation_id, m.id, 'reply', c.channel, c.chat_key, c.thread,"
        " '{}', 'pending', 0, m.created_at FROM messages m"
        " JOIN conversations c ON c.id = m.conversation_id"
        " WHERE m.direction = 'out' AND m.status = 'pending'"
    )
    if bind.dialect.name == "postgresql":
        _apply_procrastinate_schema()


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_chat")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_unanswered")
        batch_op.drop_index("ix_messages_edit_of")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_conversation")
        batch_op.drop_index("ix_outbox_status")
    op.drop_table("outbox")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_messages_answer_id_messages"), type_="foreignkey")
        batch_op.drop_column("answer_id")
        batch_op.drop_column("attempts")
        batch_op.drop_column("edit_of")
        batch_op.drop_constraint(batch_op.f("fk_messages_user_id_users"), type_="foreignkey")
        batch_op.drop_column("user_id")

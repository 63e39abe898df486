"""The store on SQLite and Postgres: schema, dedup, idle cleanup."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, func, select, text

from core.messages import Inbound, utcnow
from core.store import turns
from core.store.database import Database
from core.store.models import Message
from core.store.schema import head_revision, is_at_head


def inbound(text: str = "hi", event_id: str | None = "e1", chat: str = "c1") -> Inbound:
    return Inbound(channel="telegram", chat_key=chat, sender_id="u1", text=text, event_id=event_id)


async def test_schema_is_at_head(database: Database) -> None:
    assert head_revision() is not None
    assert await is_at_head(database)


async def test_duplicate_event_is_recorded_once(database: Database) -> None:
    now = utcnow()
    first = await database.run_core(turns.record_inbound, inbound(), now, timedelta(minutes=30))
    second = await database.run_core(turns.record_inbound, inbound(), now, timedelta(minutes=30))
    assert first is not None and second is None
    async with database.transaction() as s:
        assert await s.scalar(select(func.count()).select_from(Message)) == 1


async def test_a_turn_reads_its_own_chat_whatever_the_backlog(database: Database) -> None:
    """A burst leaves many chats with unanswered messages and items still to send; a turn's
    reads must find its chat's own by the chat's indexes, not walk everyone's backlog."""
    now = utcnow()
    for n in range(40):
        recorded = await database.run_core(
            turns.record_inbound,
            inbound(f"message {n}", event_id=f"e{n}", chat=f"c{n}"),
            now,
            timedelta(minutes=30),
        )
        assert recorded is not None
    await database.run_core(
        lambda conn: conn.exec_driver_sql(
            "INSERT INTO outbox (conversation_id, kind, channel, chat_key, thread, payload,"
            " status, attempts, created_at) SELECT id, 'reply', channel, chat_key, thread, '{}',"
            " 'pending', 0, started_at FROM conversations"
        )
    )
    chat = turns.ChatAddress("telegram", "c7")
    loaded_chat, turn, pending = await database.run_core(turns.load_turn, chat, 10)
    assert loaded_chat == chat and turn is not None
    assert turn.text == "message 7" and len(turn.message_ids) == 1
    assert [item.chat_key for item in pending] == ["c7"]
    if database.is_postgres:
        await _postgres_reads_its_own_chat(database)
        return

    def plan(conn: Connection, sql: str) -> str:
        key = {"channel": "telegram", "chat_key": "c7", "thread": "", "limit": 1}
        return " / ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, key))

    batch = await database.run_core(plan, turns._BATCH_SQL)
    assert "ix_messages_unanswered" in batch and "ix_messages_status" not in batch, batch
    outbox = await database.run_core(plan, turns._PENDING_SQL)
    assert "ix_outbox_pending_chat" in outbox, outbox
    # The history in the order the customer saw it is read from its index, never sorted whole.
    history = await database.run_core(plan, turns._HISTORY_SQL.replace(":cid", "1"))
    assert "ix_messages_history" in history and "TEMP B-TREE" not in history, history


async def _postgres_reads_its_own_chat(database: Database) -> None:
    """Postgres plans by its statistics: with a real backlog (50,000 unanswered messages in the
    other chats, analysed), the next-message read must still start from the chat."""

    def backlog(conn: Connection) -> None:
        conn.exec_driver_sql(
            "INSERT INTO messages (conversation_id, channel, direction, author, text, status,"
            " created_at, meta, attempts) SELECT c.id, 'telegram', 'in', 'user:1', 'hi',"
            " 'received', now(), '{}', 0 FROM conversations c, generate_series(1, 1300) g"
            " WHERE c.chat_key != 'c7'"
        )
        conn.exec_driver_sql("ANALYZE messages")

    def plan(conn: Connection) -> str:
        key = {"channel": "telegram", "chat_key": "c7", "thread": "", "limit": 1}
        return " / ".join(row[0] for row in conn.execute(text("EXPLAIN " + turns._BATCH_SQL), key))

    await database.run_core(backlog)
    batch = await database.run_core(plan)
    assert "ix_messages_unanswered" in batch and "pk_messages" not in batch, batch

"""The store on SQLite and Postgres: schema, dedup, idle cleanup."""

from __future__ import annotations

from datetime import datetime, timedelta

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


async def _one_message_in_each(database: Database, chats: int, now: datetime) -> None:
    """Chats c0, c1, ... each with one unanswered message ("message 0", ...)."""
    for n in range(chats):
        recorded = await database.run_core(
            turns.record_inbound,
            inbound(f"message {n}", event_id=f"e{n}", chat=f"c{n}"),
            now,
            timedelta(minutes=30),
        )
        assert recorded is not None


async def test_a_turn_reads_its_own_chat_whatever_the_backlog(database: Database) -> None:
    """A burst leaves many chats with unanswered messages and items still to send; a turn's
    reads must find its chat's own by the chat's indexes, not walk everyone's backlog."""
    now = utcnow()
    await _one_message_in_each(database, 40, now)
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
    assert "ix_messages_unanswered" in batch and "SCAN m " not in batch, batch
    outbox = await database.run_core(plan, turns._PENDING_SQL)
    assert "ix_outbox_pending_chat" in outbox, outbox
    # The history in the order the customer saw it is read from its index, never sorted whole.
    history = await database.run_core(plan, turns._HISTORY_SQL.replace(":cid", "1"))
    assert "ix_messages_history" in history and "TEMP B-TREE" not in history, history
    # The sweep for messages a crash left unanswered reads them from their index, whatever
    # else the table holds (there is no index on every message's status).
    backlog = await database.run_core(plan, turns._BACKLOG_SQL)
    assert "USING INDEX ix_messages_unanswered" in backlog, backlog


async def test_a_turn_claims_its_messages_by_its_chat_after_a_burst(database: Database) -> None:
    """The claim (a turn's messages marked answered) must find those messages alone, even when
    the planner's statistics predate a burst (here, a new database's first burst: none yet) and
    thousands of other chats' messages wait unanswered."""
    now = utcnow()
    if database.is_postgres:
        # No statistics until this test says so, as before autovacuum's first visit.
        await database.run_core(
            lambda conn: conn.exec_driver_sql(
                "ALTER TABLE messages SET (autovacuum_enabled = false)"
            )
        )
    await _one_message_in_each(database, 30, now)

    def burst(conn: Connection) -> None:
        conn.exec_driver_sql(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 100)"
            " INSERT INTO messages (conversation_id, channel, direction, author, text, status,"
            " created_at, meta, attempts) SELECT m.conversation_id, 'telegram', 'in', 'user:1',"
            " 'hi', 'received', m.created_at, '{}', 0 FROM messages m CROSS JOIN g"
            " WHERE m.conversation_id != (SELECT id FROM conversations WHERE chat_key = 'c7')"
        )

    def chat_seven(conn: Connection) -> tuple[int, list[int]]:
        # Four more of its own, so that the turn answers five at once.
        for n in range(4):
            turns.record_inbound(
                conn, inbound(f"and {n}", event_id=f"c7-{n}", chat="c7"), now, timedelta(hours=1)
            )
        rows = conn.exec_driver_sql(
            "SELECT m.conversation_id, m.id FROM messages m JOIN conversations c"
            " ON c.id = m.conversation_id WHERE c.chat_key = 'c7' AND m.status = 'received'"
        ).all()
        return rows[0][0], [row[1] for row in rows]

    await database.run_core(burst)
    conversation_id, message_ids = await database.run_core(chat_seven)
    assert len(message_ids) == 5
    ids_sql, ids = turns._in("m", message_ids)
    sql = turns._claim_sql(ids_sql)
    params = {**ids, "cid": conversation_id, "now": now, "status": "answered", "reply_id": None}
    explain = "EXPLAIN ANALYZE " if database.is_postgres else "EXPLAIN QUERY PLAN "

    def plan(conn: Connection) -> str:
        return " / ".join(str(row[-1]) for row in conn.execute(text(explain + sql), params))

    found = await database.run_core(plan)
    if database.is_postgres:
        removed = [int(part.split(":")[1]) for part in found.split(" / ") if "Removed" in part]
        assert max(removed, default=0) < 10, found
    else:
        assert "(conversation_id=? AND id=?)" in found or "rowid=?" in found, found


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

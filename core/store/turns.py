"""The turn pipeline's own queries, as plain synchronous functions over one connection.

``Database.run_core`` executes each as one transaction (on the SQLite database thread, or
through the async engine on Postgres). They run on every message, so they are written as SQL
that both databases speak (see ``_Statements``); the rest of the store uses the ORM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, text, update

from core.agent.base import HistoryItem, LeadDraft
from core.messages import Inbound
from core.store.models import (
    ConversationStatus,
    Lead,
    MessageStatus,
    User,
)


@dataclass(frozen=True)
class Recorded:
    message_id: int
    conversation_id: int
    welcome_back: bool
    # The turn's data read in the same transaction, when the caller asked for it.
    turn: TurnData | None = None


@dataclass(frozen=True)
class TurnData:
    """Everything a turn needs, read in one go."""

    message_id: int
    message_status: str
    text: str
    meta: dict[str, Any]
    conversation_id: int
    channel: str
    chat_key: str
    thread: str
    conversation_status: str
    paused: bool
    state: dict[str, Any]
    summary: str | None
    user_id: int | None
    user_banned: bool
    user_name: str | None
    user_phone: str | None
    history: tuple[HistoryItem, ...]
    # The user's id on their channel (telegram:<this>), for admin checks and the audit log.
    user_external_id: str | None = None
    # An admin paused the whole bot: store messages, answer none (bot_flags row "paused").
    bot_paused: bool = False


# One statement whether the user is new or known; safe when two processes race.
_UPSERT_USER_SQL = (
    "INSERT INTO users (channel, external_id, display_name, phone, created_at, last_seen_at,"
    " broadcast_opt_in, banned)"
    " VALUES (:channel, :external_id, :display_name, :phone, :now, :now, false, false)"
    " ON CONFLICT (channel, external_id) DO UPDATE SET last_seen_at = excluded.last_seen_at,"
    " display_name = COALESCE(excluded.display_name, users.display_name),"
    " phone = COALESCE(excluded.phone, users.phone)"
    " RETURNING id"
)


class _Statements:
    """Runs the hot path's SQL, one text for both databases (``:name`` parameters).

    On SQLite it goes straight to the stdlib driver inside the transaction SQLAlchemy began:
    these few statements run on every message, and SQLAlchemy's per-statement work cost ten
    times SQLite's own. Values are stored exactly as the SQLAlchemy types store them (UTC
    timestamps as ISO text, JSON as text), so the ORM reads these rows unchanged."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.raw: Any = (
            self.conn.connection.driver_connection if self.conn.dialect.name == "sqlite" else None
        )

    def run(self, sql: str, params: dict[str, Any]) -> Any:
        if self.raw is not None:
            return self.raw.execute(sql, {k: _to_sqlite(v) for k, v in params.items()})
        return self.conn.execute(text(sql), {k: _to_postgres(v) for k, v in params.items()})

    def one(self, sql: str, params: dict[str, Any]) -> Any:
        return self.run(sql, params).fetchone()

    def changed(self, sql: str, params: dict[str, Any]) -> int:
        return int(self.run(sql, params).rowcount or 0)


def _to_sqlite(value: Any) -> Any:
    if isinstance(value, datetime):
        # SQLAlchemy's SQLite DATETIME format; every stored time is UTC.
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _to_postgres(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def _when(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def record_inbound(
    conn: Connection,
    inbound: Inbound,
    now: datetime,
    idle_after: timedelta,
    prefetch_history: int | None = None,
) -> Recorded | None:
    """Store an inbound message with its user and conversation; ``None`` for a duplicate.
    With ``prefetch_history`` (a history length), also read the turn's data in the same
    transaction, saving the turn a round trip when it starts right away."""
    q = _Statements(conn)
    if inbound.event_id is not None and q.one(
        "SELECT id FROM messages WHERE channel = :channel AND platform_event_id = :event_id",
        {"channel": inbound.channel, "event_id": inbound.event_id},
    ):
        return None
    user_id = q.one(
        _UPSERT_USER_SQL,
        {
            "channel": inbound.channel,
            "external_id": inbound.sender_id,
            "display_name": inbound.sender_name,
            "phone": inbound.contact_phone,
            "now": now,
        },
    )[0]
    key = {"channel": inbound.channel, "chat_key": inbound.chat_key, "thread": inbound.thread}
    row = q.one(
        "SELECT id, status, last_activity_at FROM conversations WHERE channel = :channel"
        " AND chat_key = :chat_key AND thread = :thread AND status != 'closed'",
        key,
    )
    welcome_back = False
    conversation_id: int | None = None
    if row is not None:
        conversation_id = row[0]
        if row[1] == ConversationStatus.ACTIVE and now - _when(row[2]) > idle_after:
            # Idle past the limit but not yet swept by the cleanup job: close it the same way.
            q.run(
                "UPDATE conversations SET status = 'closed', closed_at = :now,"
                " close_reason = 'idle' WHERE id = :cid",
                {"now": now, "cid": row[0]},
            )
            conversation_id, welcome_back = None, True
        else:
            q.run(
                "UPDATE conversations SET last_activity_at = :now WHERE id = :cid",
                {"now": now, "cid": row[0]},
            )
    if conversation_id is None:
        if not welcome_back:
            last = q.one(
                "SELECT close_reason FROM conversations WHERE channel = :channel"
                " AND chat_key = :chat_key AND thread = :thread ORDER BY id DESC LIMIT 1",
                key,
            )
            welcome_back = last is not None and last[0] == "idle"
        conversation_id = q.one(
            "INSERT INTO conversations (channel, chat_key, thread, user_id, status, started_at,"
            " last_activity_at, state, paused) VALUES (:channel, :chat_key, :thread, :user_id,"
            " 'active', :now, :now, :state, false) RETURNING id",
            {**key, "user_id": user_id, "now": now, "state": {}},
        )[0]
    meta: dict[str, Any] = {}
    if inbound.command is not None:
        meta["command"] = inbound.command.name
    if inbound.attachments:
        meta["attachments"] = [a.kind for a in inbound.attachments]
    if inbound.contact_phone:
        meta["contact_shared"] = True
    if inbound.extra:
        meta["extra"] = dict(inbound.extra)
    message_id = q.one(
        "INSERT INTO messages (conversation_id, channel, direction, author, text,"
        " platform_event_id, status, created_at, meta) VALUES (:cid, :channel, 'in', :author,"
        " :text, :event_id, 'received', :now, :meta) RETURNING id",
        {
            "cid": conversation_id,
            "channel": inbound.channel,
            "author": f"user:{user_id}",
            "text": inbound.text,
            "event_id": inbound.event_id,
            "now": now,
            "meta": meta,
        },
    )[0]
    turn = load_turn(conn, message_id, prefetch_history) if prefetch_history is not None else None
    return Recorded(message_id, conversation_id, welcome_back, turn)


_TURN_SQL = (
    "SELECT m.id, m.status, m.text, m.meta, c.id, c.channel, c.chat_key, c.thread, c.status,"
    " c.paused, c.state, c.summary, c.user_id, u.banned, u.display_name, u.phone,"
    " u.external_id, (SELECT key FROM bot_flags WHERE key = 'paused')"
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
    " LEFT JOIN users u ON u.id = c.user_id WHERE m.id = :mid"
)


def load_turn(conn: Connection, message_id: int, history_limit: int) -> TurnData | None:
    q = _Statements(conn)
    row = q.one(_TURN_SQL, {"mid": message_id})
    if row is None:
        return None
    # The scripted agent keeps its own state and reads no history: skip the query for it.
    earlier = (
        q.run(
            "SELECT direction, author, text FROM messages WHERE conversation_id = :cid"
            " AND id < :mid ORDER BY id DESC LIMIT :limit",
            {"cid": row[4], "mid": message_id, "limit": history_limit},
        ).fetchall()
        if history_limit > 0
        else []
    )
    history = tuple(
        HistoryItem("user" if d == "in" else "human" if a.startswith("human:") else "assistant", t)
        for d, a, t in reversed(earlier)
    )
    return TurnData(
        message_id=row[0],
        message_status=row[1],
        text=row[2],
        meta=_json(row[3]),
        conversation_id=row[4],
        channel=row[5],
        chat_key=row[6],
        thread=row[7],
        conversation_status=row[8],
        paused=bool(row[9]),
        state=_json(row[10]),
        summary=row[11],
        user_id=row[12],
        user_banned=bool(row[13]),
        user_name=row[14],
        user_phone=row[15],
        history=history,
        user_external_id=row[16],
        bot_paused=row[17] is not None,
    )


@dataclass(frozen=True)
class Answer:
    """What a finished turn writes: the reply (or nothing) and the conversation's new state."""

    text: str | None
    state: dict[str, Any]
    meta: dict[str, Any]
    summary: str | None = None
    lead: LeadDraft | None = None
    close_reason: str | None = None


def persist_turn(conn: Connection, turn: TurnData, answer: Answer, now: datetime) -> int | None:
    """Mark the inbound answered and store the reply, once: ``None`` when another process got
    there first or when the turn has no reply."""
    q = _Statements(conn)
    conn = q.conn
    claimed = q.changed(
        "UPDATE messages SET status = :status, answered_at = :now"
        " WHERE id = :mid AND status = 'received'",
        {
            "mid": turn.message_id,
            "now": now,
            "status": MessageStatus.IGNORED if answer.text is None else MessageStatus.ANSWERED,
        },
    )
    if not claimed or answer.text is None:
        return None
    q.run(
        "UPDATE conversations SET state = :state, last_activity_at = :now,"
        " summary = COALESCE(:summary, summary),"
        " status = COALESCE(:close_status, status), closed_at = COALESCE(:closed_at, closed_at),"
        " close_reason = COALESCE(:close_reason, close_reason) WHERE id = :cid",
        {
            "state": answer.state,
            "now": now,
            "summary": answer.summary,
            "close_status": ConversationStatus.CLOSED if answer.close_reason else None,
            "closed_at": now if answer.close_reason else None,
            "close_reason": answer.close_reason,
            "cid": turn.conversation_id,
        },
    )
    meta = dict(answer.meta)
    if answer.lead is not None:
        lead = answer.lead
        meta["lead_id"] = conn.execute(
            insert(Lead)
            .values(
                conversation_id=turn.conversation_id,
                user_id=turn.user_id,
                product=lead.product,
                amount=lead.amount,
                tenure_months=lead.tenure_months,
                monthly_income=lead.monthly_income,
                emi=lead.emi,
                eligible=lead.eligible,
                name=lead.name,
                phone=lead.phone,
                consent=lead.consent,
                consent_at=now if lead.consent else None,
                status="new",
                created_at=now,
            )
            .returning(Lead.id)
        ).scalar_one()
        if turn.user_id is not None and not turn.user_phone:
            conn.execute(update(User).where(User.id == turn.user_id).values(phone=lead.phone))
    return int(
        q.one(
            "INSERT INTO messages (conversation_id, channel, direction, author, text, status,"
            " created_at, reply_to_id, meta) VALUES (:cid, :channel, 'out', 'bot', :text,"
            " 'pending', :now, :reply_to, :meta) RETURNING id",
            {
                "cid": turn.conversation_id,
                "channel": turn.channel,
                "text": answer.text,
                "now": now,
                "reply_to": turn.message_id,
                "meta": meta,
            },
        )[0]
    )


def set_delivery(conn: Connection, reply_id: int, status: str) -> None:
    _Statements(conn).run(
        "UPDATE messages SET status = :status WHERE id = :mid", {"status": status, "mid": reply_id}
    )

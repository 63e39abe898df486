"""API sessions: the web channel's conversations, each bound to the API key that created it.

A session id is the web channel's chat key. Only a hash of the creating key is stored, so the
database never holds a usable key. Plain synchronous queries, run through ``Database.run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from core.store.models import ApiSession, Conversation, ConversationStatus, Message

# A session's view returns at most this many messages, newest last.
HISTORY_LIMIT = 200


@dataclass(frozen=True)
class SessionRecord:
    id: str
    key_hash: str
    created_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class HistoryMessage:
    id: int
    role: str  # user, assistant, human (a sales rep)
    text: str
    created_at: datetime
    citations: tuple[dict[str, Any], ...] = ()
    choices: tuple[dict[str, Any], ...] = ()
    # A reply's: the inbound messages it answers.
    answers: tuple[int, ...] = ()


@dataclass(frozen=True)
class SessionView:
    record: SessionRecord
    status: str  # active, handoff, closed (no open conversation), ended
    last_activity_at: datetime | None
    messages: tuple[HistoryMessage, ...]


@dataclass(frozen=True)
class StoredReply:
    """The answer already given to a message, for a client that retries it."""

    status: str  # the inbound message's status: received (still in progress), answered, ...
    text: str | None
    meta: dict[str, Any]


def create_session(session: Session, session_id: str, key_hash: str, now: datetime) -> None:
    session.connection().execute(
        insert(ApiSession).values(id=session_id, key_hash=key_hash, created_at=now, ended_at=None)
    )


def find_session(session: Session, session_id: str) -> SessionRecord | None:
    row = (
        session.connection()
        .execute(
            select(
                ApiSession.id, ApiSession.key_hash, ApiSession.created_at, ApiSession.ended_at
            ).where(ApiSession.id == session_id)
        )
        .first()
    )
    if row is None:
        return None
    created, ended = _aware(row.created_at), row.ended_at
    return SessionRecord(row.id, row.key_hash, created, _aware(ended) if ended else None)


def end_session(session: Session, session_id: str, channel: str, now: datetime) -> bool:
    """End the session for good. ``False`` if it had ended already.

    The core refuses a chat's messages when the chat's latest conversation was closed with
    reason "ended" (``ChatEnded``): that is what makes the end hold in every process, whatever
    a process may still have cached. So the open conversation is closed "ended"; one that had
    already closed (idle, reset) is marked "ended" too; and a session that never had one gets
    an empty conversation closed "ended", so a late message cannot start one."""
    conn = session.connection()
    ended = conn.execute(
        update(ApiSession)
        .where(ApiSession.id == session_id, ApiSession.ended_at.is_(None))
        .values(ended_at=now)
    )
    of_session = (Conversation.channel == channel, Conversation.chat_key == session_id)
    conn.execute(
        update(Conversation)
        .where(*of_session, Conversation.status != ConversationStatus.CLOSED)
        .values(status=ConversationStatus.CLOSED, closed_at=now, close_reason="ended")
    )
    latest = conn.execute(select(func.max(Conversation.id)).where(*of_session)).scalar()
    if latest is None:
        conn.execute(
            insert(Conversation).values(
                channel=channel,
                chat_key=session_id,
                thread="",
                user_id=None,
                status=ConversationStatus.CLOSED,
                started_at=now,
                last_activity_at=now,
                closed_at=now,
                close_reason="ended",
                state={},
                paused=False,
            )
        )
    else:
        conn.execute(
            update(Conversation)
            .where(Conversation.id == latest, Conversation.close_reason.is_distinct_from("ended"))
            .values(close_reason="ended")
        )
    return bool(getattr(ended, "rowcount", 0))


def session_view(
    session: Session, record: SessionRecord, channel: str, limit: int = HISTORY_LIMIT
) -> SessionView:
    """Status, last activity and the message history across the session's conversations."""
    conn = session.connection()
    conversations = select(Conversation.id).where(
        Conversation.channel == channel, Conversation.chat_key == record.id
    )
    latest = conn.execute(
        select(Conversation.status, Conversation.last_activity_at)
        .where(Conversation.channel == channel, Conversation.chat_key == record.id)
        .order_by(Conversation.id.desc())
        .limit(1)
    ).first()
    rows = conn.execute(
        select(Message.id, Message.direction, Message.author, Message.text, Message.created_at)
        .add_columns(Message.meta, Message.reply_to_id)
        .where(Message.conversation_id.in_(conversations))
        .order_by(Message.id.desc())
        .limit(limit)
    ).all()
    messages = []
    for row in reversed(rows):
        meta = row.meta or {}
        role = "user" if row.direction == "in" else "assistant"
        if row.author.startswith("human:"):
            role = "human"
        messages.append(
            HistoryMessage(
                id=row.id,
                role=role,
                text=row.text,
                created_at=_aware(row.created_at),
                citations=tuple(meta.get("citations") or ()),
                choices=tuple(meta.get("choices") or ()),
                answers=tuple(
                    meta.get("answers") or ([row.reply_to_id] if row.reply_to_id else [])
                ),
            )
        )
    if record.ended_at is not None:
        status = "ended"
    elif latest is None:
        status = ConversationStatus.ACTIVE  # created, nothing said yet
    else:
        status = latest.status
    last = _aware(latest.last_activity_at) if latest is not None else None
    return SessionView(record, status, last, tuple(messages))


def stored_reply(session: Session, channel: str, event_id: str) -> StoredReply | None:
    """The reply to the inbound message with this event id, if that message exists."""
    conn = session.connection()
    inbound = conn.execute(
        select(Message.id, Message.status).where(
            Message.channel == channel, Message.platform_event_id == event_id
        )
    ).first()
    if inbound is None:
        return None
    reply = conn.execute(
        select(Message.text, Message.meta)
        .where(Message.reply_to_id == inbound.id, Message.direction == "out")
        .order_by(Message.id)
        .limit(1)
    ).first()
    if reply is None:
        return StoredReply(inbound.status, None, {})
    return StoredReply(inbound.status, reply.text, dict(reply.meta or {}))


def open_conversations(session: Session) -> dict[str, int]:
    """Open conversations (active or handed off) per channel, for the active-sessions gauge."""
    rows = session.connection().execute(
        select(Conversation.channel, func.count())
        .where(Conversation.status != ConversationStatus.CLOSED)
        .group_by(Conversation.channel)
    )
    return {channel: int(count) for channel, count in rows}


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes from Core selects; they are stored as UTC.
    if value.tzinfo is None:
        from datetime import UTC

        return value.replace(tzinfo=UTC)
    return value

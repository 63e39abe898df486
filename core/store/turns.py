"""The turn pipeline's own queries, as plain synchronous functions over one session.

``Database.run`` executes each as one transaction (on the SQLite database thread, or through the
async engine on Postgres). They use Core statements: these run on every message, and ORM
identity-map bookkeeping would cost more than the SQL itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.agent.base import HistoryItem, LeadDraft
from core.messages import Inbound
from core.store.models import Conversation, ConversationStatus, Lead, Message, MessageStatus, User


@dataclass(frozen=True)
class Recorded:
    message_id: int
    conversation_id: int
    welcome_back: bool


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


def _upsert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


# Statements that run on every message are built once. They execute on the session's Core
# connection: through the ORM session the same UPDATE costs ten times the CPU.
_FIND_EVENT = select(Message.id).where(
    Message.channel == bindparam("channel"), Message.platform_event_id == bindparam("event_id")
)
_OPEN_CONVERSATION = select(
    Conversation.id, Conversation.status, Conversation.last_activity_at
).where(
    Conversation.channel == bindparam("channel"),
    Conversation.chat_key == bindparam("chat_key"),
    Conversation.thread == bindparam("thread"),
    Conversation.status != ConversationStatus.CLOSED,
)
_TOUCH = (
    update(Conversation)
    .where(Conversation.id == bindparam("cid"))
    .values(last_activity_at=bindparam("now"))
)
_CLAIM = (
    update(Message)
    .where(Message.id == bindparam("mid"), Message.status == MessageStatus.RECEIVED)
    .values(status=bindparam("new_status"), answered_at=bindparam("now"))
)
_SET_STATUS = update(Message).where(Message.id == bindparam("mid")).values(status=bindparam("st"))
_INSERT_MESSAGE = insert(Message).returning(Message.id)


def record_inbound(
    session: Session, inbound: Inbound, now: datetime, idle_after: timedelta
) -> Recorded | None:
    """Store an inbound message with its user and conversation; ``None`` for a duplicate."""
    conn = session.connection()
    if (
        inbound.event_id is not None
        and conn.execute(
            _FIND_EVENT, {"channel": inbound.channel, "event_id": inbound.event_id}
        ).first()
        is not None
    ):
        return None
    changes: dict[str, Any] = {"last_seen_at": now}
    if inbound.sender_name:
        changes["display_name"] = inbound.sender_name
    if inbound.contact_phone:
        changes["phone"] = inbound.contact_phone
    # One statement whether the user is new or known; safe when two processes race.
    user_id = conn.execute(
        _upsert(conn)(User)
        .values(
            channel=inbound.channel,
            external_id=inbound.sender_id,
            display_name=inbound.sender_name,
            phone=inbound.contact_phone,
            created_at=now,
            last_seen_at=now,
            broadcast_opt_in=False,
            banned=False,
        )
        .on_conflict_do_update(index_elements=["channel", "external_id"], set_=changes)
        .returning(User.id)
    ).scalar_one()
    key = {"channel": inbound.channel, "chat_key": inbound.chat_key, "thread": inbound.thread}
    row = conn.execute(_OPEN_CONVERSATION, key).first()
    welcome_back = False
    conversation_id: int | None = None
    if row is not None:
        conversation_id = row.id
        if row.status == ConversationStatus.ACTIVE and now - row.last_activity_at > idle_after:
            # Idle past the limit but not yet swept by the cleanup job: close it the same way.
            conn.execute(
                update(Conversation)
                .where(Conversation.id == row.id)
                .values(status=ConversationStatus.CLOSED, closed_at=now, close_reason="idle")
            )
            conversation_id, welcome_back = None, True
        else:
            conn.execute(_TOUCH, {"cid": row.id, "now": now})
    if conversation_id is None:
        if not welcome_back:
            last_reason = conn.execute(
                select(Conversation.close_reason)
                .where(
                    Conversation.channel == inbound.channel,
                    Conversation.chat_key == inbound.chat_key,
                    Conversation.thread == inbound.thread,
                )
                .order_by(Conversation.id.desc())
                .limit(1)
            ).scalar()
            welcome_back = last_reason == "idle"
        conversation_id = conn.execute(
            insert(Conversation)
            .values(
                channel=inbound.channel,
                chat_key=inbound.chat_key,
                thread=inbound.thread,
                user_id=user_id,
                status=ConversationStatus.ACTIVE,
                started_at=now,
                last_activity_at=now,
                state={},
                paused=False,
            )
            .returning(Conversation.id)
        ).scalar_one()
    meta: dict[str, Any] = {}
    if inbound.command is not None:
        meta["command"] = inbound.command.name
    if inbound.attachments:
        meta["attachments"] = [a.kind for a in inbound.attachments]
    if inbound.contact_phone:
        meta["contact_shared"] = True
    if inbound.extra:
        meta["extra"] = dict(inbound.extra)
    message_id = conn.execute(
        _INSERT_MESSAGE,
        {
            "conversation_id": conversation_id,
            "channel": inbound.channel,
            "direction": "in",
            "author": f"user:{user_id}",
            "text": inbound.text,
            "platform_event_id": inbound.event_id,
            "status": MessageStatus.RECEIVED,
            "created_at": now,
            "meta": meta,
            "answered_at": None,
            "reply_to_id": None,
        },
    ).scalar_one()
    return Recorded(message_id, conversation_id, welcome_back)


_TURN = (
    select(
        Message.id,
        Message.status,
        Message.text,
        Message.meta,
        Conversation.id.label("cid"),
        Conversation.channel,
        Conversation.chat_key,
        Conversation.thread,
        Conversation.status.label("conversation_status"),
        Conversation.paused,
        Conversation.state,
        Conversation.summary,
        Conversation.user_id,
        User.banned,
        User.display_name,
        User.phone,
    )
    .join(Conversation, Conversation.id == Message.conversation_id)
    .outerjoin(User, User.id == Conversation.user_id)
    .where(Message.id == bindparam("mid"))
)
_HISTORY = (
    select(Message.direction, Message.author, Message.text)
    .where(Message.conversation_id == bindparam("cid"), Message.id < bindparam("mid"))
    .order_by(Message.id.desc())
    .limit(bindparam("limit"))
)


def load_turn(session: Session, message_id: int, history_limit: int) -> TurnData | None:
    conn = session.connection()
    row = conn.execute(_TURN, {"mid": message_id}).first()
    if row is None:
        return None
    earlier = conn.execute(
        _HISTORY, {"cid": row.cid, "mid": message_id, "limit": history_limit}
    ).all()
    history = tuple(
        HistoryItem("user" if d == "in" else "human" if a.startswith("human:") else "assistant", t)
        for d, a, t in reversed(earlier)
    )
    return TurnData(
        message_id=row.id,
        message_status=row.status,
        text=row.text,
        meta=dict(row.meta or {}),
        conversation_id=row.cid,
        channel=row.channel,
        chat_key=row.chat_key,
        thread=row.thread,
        conversation_status=row.conversation_status,
        paused=bool(row.paused),
        state=dict(row.state or {}),
        summary=row.summary,
        user_id=row.user_id,
        user_banned=bool(row.banned),
        user_name=row.display_name,
        user_phone=row.phone,
        history=history,
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


def persist_turn(session: Session, turn: TurnData, answer: Answer, now: datetime) -> int | None:
    """Mark the inbound answered and store the reply, once: ``None`` when another process got
    there first or when the turn has no reply."""
    conn = session.connection()
    claimed = conn.execute(
        _CLAIM,
        {
            "mid": turn.message_id,
            "now": now,
            "new_status": MessageStatus.IGNORED if answer.text is None else MessageStatus.ANSWERED,
        },
    )
    if not getattr(claimed, "rowcount", 0) or answer.text is None:
        return None
    values: dict[str, Any] = {"state": answer.state, "last_activity_at": now}
    if answer.summary is not None:
        values["summary"] = answer.summary
    if answer.close_reason is not None:
        values.update(
            status=ConversationStatus.CLOSED, closed_at=now, close_reason=answer.close_reason
        )
    conn.execute(
        update(Conversation).where(Conversation.id == turn.conversation_id).values(**values)
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
        conn.execute(
            _INSERT_MESSAGE,
            {
                "conversation_id": turn.conversation_id,
                "channel": turn.channel,
                "direction": "out",
                "author": "bot",
                "text": answer.text,
                "platform_event_id": None,
                "status": MessageStatus.PENDING,
                "created_at": now,
                "answered_at": None,
                "reply_to_id": turn.message_id,
                "meta": meta,
            },
        ).scalar_one()
    )


def set_delivery(session: Session, reply_id: int, status: str) -> None:
    session.connection().execute(_SET_STATUS, {"mid": reply_id, "st": status})

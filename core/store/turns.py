"""The turn pipeline's own queries, as plain synchronous functions over one session.

``Database.run`` executes each as one transaction (on the SQLite database thread, or through the
async engine on Postgres). They use Core statements: these run on every message, and ORM
identity-map bookkeeping would cost more than the SQL itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.agent.base import HistoryItem, LeadDraft
from core.messages import Inbound
from core.store.models import (
    BotFlag,
    Conversation,
    ConversationStatus,
    Lead,
    Message,
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


# Statements that run on every message are built once, on the tables rather than the mapped
# classes, and execute on the session's Core connection: through the ORM the same statements
# cost several times the CPU of the SQL itself.
_users = cast(Table, User.__table__)
_conversations = cast(Table, Conversation.__table__)
_messages = cast(Table, Message.__table__)


def _user_upsert(dialect: Any) -> Any:
    insert_fn = postgresql.insert if dialect is postgresql else sqlite.insert
    stmt = insert_fn(_users)
    return stmt.on_conflict_do_update(
        index_elements=["channel", "external_id"],
        set_={
            "last_seen_at": stmt.excluded.last_seen_at,
            "display_name": func.coalesce(stmt.excluded.display_name, _users.c.display_name),
            "phone": func.coalesce(stmt.excluded.phone, _users.c.phone),
        },
    ).returning(_users.c.id)


# One statement whether the user is new or known; safe when two processes race.
_UPSERT_USER = {"postgresql": _user_upsert(postgresql), "sqlite": _user_upsert(sqlite)}
_INSERT_CONVERSATION = insert(_conversations).returning(_conversations.c.id)
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
_INSERT_MESSAGE = insert(_messages).returning(_messages.c.id)


def record_inbound(
    session: Session,
    inbound: Inbound,
    now: datetime,
    idle_after: timedelta,
    prefetch_history: int | None = None,
) -> Recorded | None:
    """Store an inbound message with its user and conversation; ``None`` for a duplicate.
    With ``prefetch_history`` (a history length), also read the turn's data in the same
    transaction, saving the turn a round trip when it starts right away."""
    conn = session.connection()
    if (
        inbound.event_id is not None
        and conn.execute(
            _FIND_EVENT, {"channel": inbound.channel, "event_id": inbound.event_id}
        ).first()
        is not None
    ):
        return None
    user_id = conn.execute(
        _UPSERT_USER[conn.dialect.name],
        {
            "channel": inbound.channel,
            "external_id": inbound.sender_id,
            "display_name": inbound.sender_name,
            "phone": inbound.contact_phone,
            "created_at": now,
            "last_seen_at": now,
            "broadcast_opt_in": False,
            "banned": False,
        },
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
            _INSERT_CONVERSATION,
            {
                "channel": inbound.channel,
                "chat_key": inbound.chat_key,
                "thread": inbound.thread,
                "user_id": user_id,
                "status": ConversationStatus.ACTIVE,
                "started_at": now,
                "last_activity_at": now,
                "closed_at": None,
                "close_reason": None,
                "state": {},
                "summary": None,
                "paused": False,
                "assigned_to": None,
            },
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
    turn = (
        load_turn(session, message_id, prefetch_history) if prefetch_history is not None else None
    )
    return Recorded(message_id, conversation_id, welcome_back, turn)


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
        User.external_id,
        select(BotFlag.key).where(BotFlag.key == "paused").scalar_subquery().label("bot_paused"),
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
    # The scripted agent keeps its own state and reads no history: skip the query for it.
    earlier = (
        conn.execute(_HISTORY, {"cid": row.cid, "mid": message_id, "limit": history_limit}).all()
        if history_limit > 0
        else []
    )
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
        user_external_id=row.external_id,
        bot_paused=row.bot_paused is not None,
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

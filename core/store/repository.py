"""Queries the core needs, one place per question. Each takes an open session so the caller
decides the transaction boundary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core.agent.base import HistoryItem, LeadDraft
from core.messages import Inbound
from core.store.models import (
    AuditEntry,
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


async def message_exists(session: AsyncSession, channel: str, event_id: str) -> bool:
    found = await session.scalar(
        select(Message.id).where(Message.channel == channel, Message.platform_event_id == event_id)
    )
    return found is not None


async def upsert_user(session: AsyncSession, inbound: Inbound, now: datetime) -> User:
    dialect = session.bind.dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # ON CONFLICT DO NOTHING: two processes may see the same new user at once.
    await session.execute(
        insert_fn(User)
        .values(
            channel=inbound.channel,
            external_id=inbound.sender_id,
            display_name=inbound.sender_name,
            created_at=now,
            last_seen_at=now,
        )
        .on_conflict_do_nothing(index_elements=["channel", "external_id"])
    )
    user = (
        await session.scalars(
            select(User).where(
                User.channel == inbound.channel, User.external_id == inbound.sender_id
            )
        )
    ).one()
    user.last_seen_at = now
    if inbound.sender_name and user.display_name != inbound.sender_name:
        user.display_name = inbound.sender_name
    if inbound.contact_phone:
        user.phone = inbound.contact_phone
    return user


async def open_conversation(
    session: AsyncSession, channel: str, chat_key: str, thread: str
) -> Conversation | None:
    return (
        await session.scalars(
            select(Conversation).where(
                Conversation.channel == channel,
                Conversation.chat_key == chat_key,
                Conversation.thread == thread,
                Conversation.status != ConversationStatus.CLOSED,
            )
        )
    ).one_or_none()


async def last_closed_reason(
    session: AsyncSession, channel: str, chat_key: str, thread: str
) -> str | None:
    return await session.scalar(
        select(Conversation.close_reason)
        .where(
            Conversation.channel == channel,
            Conversation.chat_key == chat_key,
            Conversation.thread == thread,
            Conversation.status == ConversationStatus.CLOSED,
        )
        .order_by(Conversation.id.desc())
        .limit(1)
    )


def close(conversation: Conversation, reason: str, now: datetime) -> None:
    conversation.status = ConversationStatus.CLOSED
    conversation.closed_at = now
    conversation.close_reason = reason


async def record_inbound(
    session: AsyncSession, inbound: Inbound, now: datetime, idle_after: timedelta
) -> Recorded | None:
    """Store an inbound message with its user and conversation. ``None`` for a duplicate."""
    if inbound.event_id is not None and await message_exists(
        session, inbound.channel, inbound.event_id
    ):
        return None
    user = await upsert_user(session, inbound, now)
    conversation = await open_conversation(
        session, inbound.channel, inbound.chat_key, inbound.thread
    )
    welcome_back = False
    if (
        conversation is not None
        and conversation.status == ConversationStatus.ACTIVE
        and now - conversation.last_activity_at > idle_after
    ):
        # Idle past the limit but not yet swept by the cleanup job: close it the same way.
        close(conversation, "idle", now)
        await session.flush()
        conversation = None
        welcome_back = True
    if conversation is None:
        if not welcome_back:
            welcome_back = (
                await last_closed_reason(session, inbound.channel, inbound.chat_key, inbound.thread)
                == "idle"
            )
        conversation = Conversation(
            channel=inbound.channel,
            chat_key=inbound.chat_key,
            thread=inbound.thread,
            user_id=user.id,
            status=ConversationStatus.ACTIVE,
            started_at=now,
            last_activity_at=now,
            state={},
        )
        session.add(conversation)
        await session.flush()
    conversation.last_activity_at = now
    meta: dict[str, Any] = {}
    if inbound.command is not None:
        meta["command"] = inbound.command.name
    if inbound.attachments:
        meta["attachments"] = [a.kind for a in inbound.attachments]
    if inbound.contact_phone:
        meta["contact_shared"] = True
    if inbound.extra:
        meta["extra"] = dict(inbound.extra)
    message = Message(
        conversation_id=conversation.id,
        channel=inbound.channel,
        direction="in",
        author=f"user:{user.id}",
        text=inbound.text,
        platform_event_id=inbound.event_id,
        status=MessageStatus.RECEIVED,
        created_at=now,
        meta=meta,
    )
    session.add(message)
    await session.flush()
    return Recorded(message.id, conversation.id, welcome_back)


async def history(
    session: AsyncSession, conversation_id: int, before_id: int, limit: int
) -> tuple[HistoryItem, ...]:
    rows = (
        await session.execute(
            select(Message.direction, Message.author, Message.text)
            .where(Message.conversation_id == conversation_id, Message.id < before_id)
            .order_by(Message.id.desc())
            .limit(limit)
        )
    ).all()
    items = []
    for direction, author, text in reversed(rows):
        if direction == "in":
            role = "user"
        elif author.startswith("human:"):
            role = "human"
        else:
            role = "assistant"
        items.append(HistoryItem(role, text))
    return tuple(items)


def add_lead(
    session: AsyncSession,
    draft: LeadDraft,
    conversation_id: int,
    user_id: int | None,
    now: datetime,
) -> Lead:
    lead = Lead(
        conversation_id=conversation_id,
        user_id=user_id,
        product=draft.product,
        amount=draft.amount,
        tenure_months=draft.tenure_months,
        monthly_income=draft.monthly_income,
        emi=draft.emi,
        eligible=draft.eligible,
        name=draft.name,
        phone=draft.phone,
        consent=draft.consent,
        consent_at=now if draft.consent else None,
        status="new",
        created_at=now,
    )
    session.add(lead)
    return lead


def audit(
    session: AsyncSession,
    actor: str,
    action: str,
    outcome: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    entry = AuditEntry(
        actor=actor, action=action, outcome=outcome, target=target, details=details or {}
    )
    if now is not None:
        entry.at = now
    session.add(entry)


async def close_idle(session: AsyncSession, cutoff: datetime, now: datetime) -> int:
    """Close active conversations idle since before ``cutoff``. One UPDATE with the condition in
    the WHERE clause, so two processes running it at once close each conversation once."""
    result = await session.execute(
        update(Conversation)
        .where(
            Conversation.status == ConversationStatus.ACTIVE, Conversation.last_activity_at < cutoff
        )
        .values(status=ConversationStatus.CLOSED, closed_at=now, close_reason="idle")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def unanswered(session: AsyncSession, channels: list[str]) -> list[tuple[int, str, str, str]]:
    """Inbound messages stored but never answered, oldest first, with their conversation key."""
    rows = await session.execute(
        select(Message.id, Conversation.channel, Conversation.chat_key, Conversation.thread)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Message.direction == "in",
            Message.status == MessageStatus.RECEIVED,
            Message.channel.in_(channels),
        )
        .order_by(Message.id)
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows.all()]


async def undelivered(session: AsyncSession, channels: list[str]) -> list[Message]:
    return list(
        (
            await session.scalars(
                select(Message)
                .where(
                    Message.direction == "out",
                    Message.status == MessageStatus.PENDING,
                    Message.channel.in_(channels),
                )
                .order_by(Message.id)
            )
        ).all()
    )


async def count_messages(session: AsyncSession, conversation_id: int) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.conversation_id == conversation_id)
        )
        or 0
    )

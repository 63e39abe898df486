"""Queries the core needs, one place per question. Each takes an open session so the caller
decides the transaction boundary."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.agent.base import LeadDraft
from core.store.models import (
    AuditEntry,
    Conversation,
    ConversationStatus,
    Lead,
)


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


def close(conversation: Conversation, reason: str, now: datetime) -> None:
    conversation.status = ConversationStatus.CLOSED
    conversation.closed_at = now
    conversation.close_reason = reason


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

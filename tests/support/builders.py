"""Small builders shared by tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime

from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService, ServiceConfig
from core.messages import Inbound, parse_command, utcnow
from core.store.database import Database

_ids = itertools.count(1)


def service_for(
    db: Database,
    idle_minutes: int = 30,
    clock: Callable[[], datetime] = utcnow,
    merge_messages: int = ServiceConfig.merge_messages,
    flood_per_minute: int = ServiceConfig.flood_per_minute,
) -> ConversationService:
    catalogue = load_catalogue()
    scripted = ScriptedAgent(catalogue)
    return ConversationService(
        db,
        scripted,
        scripted,
        ServiceConfig(
            idle_minutes=idle_minutes,
            merge_messages=merge_messages,
            flood_per_minute=flood_per_minute,
        ),
        clock=clock,
    )


def customer(
    text: str,
    chat: str = "chat-1",
    channel: str = "test",
    event_id: str | None = None,
    at: datetime | None = None,
) -> Inbound:
    return Inbound(
        channel=channel,
        chat_key=chat,
        sender_id=f"user-{chat}",
        sender_name="Asha",
        text=text,
        event_id=event_id if event_id is not None else f"evt-{next(_ids)}",
        command=parse_command(text),
        received_at=at or utcnow(),
    )

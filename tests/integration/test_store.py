"""The store on SQLite and Postgres: schema, dedup, idle cleanup."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

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

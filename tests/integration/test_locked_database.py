"""A locked SQLite database: a clear error, nothing half-stored, and it works once free."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.errors import StoreUnavailable
from core.store.database import Database, create_database
from core.store.models import Message
from core.store.schema import upgrade_to_head
from tests.support.builders import customer, service_for
from tests.support.recording import RecordingPort


@pytest.fixture
async def impatient_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = create_database(f"sqlite+aiosqlite:///{tmp_path / 'esoteric.db'}", busy_timeout_ms=200)
    await upgrade_to_head(db)
    yield db
    await db.dispose()


async def test_locked_database_is_a_clear_error_and_loses_nothing(
    impatient_db: Database, tmp_path: Path
) -> None:
    service = service_for(impatient_db)
    port = RecordingPort()
    service.register_channel("test", port)
    other = sqlite3.connect(tmp_path / "esoteric.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await service.handle(customer("hi", event_id="while-locked"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert port.sent == []
    # The platform redelivers; now it is stored and answered exactly once.
    assert await service.handle(customer("hi", event_id="while-locked")) is not None
    assert len(port.sent) == 1
    async with impatient_db.transaction() as s:
        assert await s.scalar(select(func.count()).select_from(Message)) == 2

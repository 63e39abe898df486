"""A locked SQLite database: a clear error, nothing half-stored, and it works once free."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select, text
from sqlalchemy.orm import Session

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


def _where(conn: Connection, seen: list[str]) -> int:
    """A hot-path transaction that notes the thread it ran on and writes a row."""
    seen.append(threading.current_thread().name)
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("CREATE TABLE IF NOT EXISTS probe (n INTEGER)")
    raw.execute("INSERT INTO probe (n) VALUES (?)", (len(seen),))
    return len(seen)


async def test_an_idle_database_runs_the_turn_on_the_loop_thread(
    impatient_db: Database,
) -> None:
    seen: list[str] = []
    await impatient_db.run_core(_where, seen)
    await impatient_db.run_core(_where, seen)
    assert seen == [threading.current_thread().name] * 2


async def test_a_locked_database_waits_on_the_database_thread_not_the_loop(
    tmp_path: Path,
) -> None:
    db = create_database(f"sqlite+aiosqlite:///{tmp_path / 'esoteric.db'}", busy_timeout_ms=5000)
    await upgrade_to_head(db)
    seen: list[str] = []
    await db.run_core(_where, seen)
    other = sqlite3.connect(tmp_path / "esoteric.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def release() -> None:
        await asyncio.sleep(0.3)
        other.execute("COMMIT")

    ticking = asyncio.create_task(ticker())
    try:
        releasing = asyncio.create_task(release())
        written = await db.run_core(_where, seen)
        ticks_while_locked = ticks
        await releasing
    finally:
        ticking.cancel()
        other.close()
        await db.dispose()
    # The transaction ran once, whole, on the database thread, after the lock was released;
    # meanwhile the event loop went on (a blocked loop would not have ticked at all).
    assert written == 2 and seen[1] == "esoteric-sqlite_0"
    assert ticks_while_locked >= 10


async def test_work_queued_on_the_database_thread_keeps_its_order(
    impatient_db: Database,
) -> None:
    seen: list[str] = []
    await impatient_db.run_core(_where, seen)
    gate = threading.Event()
    order: list[str] = []

    def slow(session: Session) -> None:
        session.execute(text("INSERT INTO probe (n) VALUES (0)"))  # it holds the write lock
        gate.wait(5)
        order.append("slow")

    def fast(conn: Connection) -> None:
        order.append("fast")

    first = asyncio.create_task(impatient_db.run(slow))
    await asyncio.sleep(0.05)  # the slow session is on the database thread now
    second = asyncio.create_task(impatient_db.run_core(fast))
    await asyncio.sleep(0.05)
    assert order == []  # the hot-path transaction waits for the lock, not beside it
    gate.set()
    await asyncio.gather(first, second)
    assert order == ["slow", "fast"]


async def test_sessions_on_the_database_thread_still_wait_after_a_turn_on_the_loop(
    tmp_path: Path,
) -> None:
    # Only the loop's own connection fails fast on a locked database; the thread's sessions wait.
    db = create_database(f"sqlite+aiosqlite:///{tmp_path / 'esoteric.db'}", busy_timeout_ms=5000)
    await upgrade_to_head(db)
    seen: list[str] = []
    await db.run_core(_where, seen)
    await db.run_core(_where, seen)
    assert seen[1] == threading.current_thread().name  # the last transaction ran on the loop
    other = sqlite3.connect(tmp_path / "esoteric.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    def write(session: Session) -> int:
        session.execute(text("INSERT INTO probe (n) VALUES (99)"))
        return int(session.scalar(text("SELECT count(*) FROM probe")) or 0)

    async def release() -> None:
        await asyncio.sleep(0.3)
        other.execute("COMMIT")

    try:
        releasing = asyncio.create_task(release())
        assert await db.run(write) == 3  # waited for the lock instead of failing at once
        await releasing
    finally:
        other.close()
        await db.dispose()

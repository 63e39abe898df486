"""The embedded SQLite database: a stored message survives a power loss (the write-ahead log is
synced before the message is acknowledged, and other writes commit with synchronous=FULL), and
only its owner can read the file."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from core.errors import StoreUnavailable
from core.messages import Inbound
from core.store.database import Database, create_database
from core.store.schema import upgrade_to_head

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def mode(path: Path) -> int | None:
    """Permission bits, or None when there is no such file."""
    return stat.S_IMODE(path.stat().st_mode) if path.exists() else None


def side_files(path: Path) -> list[Path]:
    return [Path(f"{path}-wal"), Path(f"{path}-shm")]


def leave_world_readable(path: Path) -> None:
    """As an earlier release left a database: readable by everyone, its log files beside it."""
    path.chmod(0o644)
    for side in side_files(path):
        side.touch()
        side.chmod(0o644)
    path.parent.chmod(0o755)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The usual umask (group and others may read): the database must not rely on it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _synchronous_core(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def _synchronous_orm(session: Session) -> int:
    return int(session.execute(text("PRAGMA synchronous")).scalar_one())


async def test_every_connection_commits_durably(sqlite_database: Database) -> None:
    db = sqlite_database
    # The turn path's connection on the event loop's thread (inbound messages are stored here
    # whenever the write lock is free)...
    assert await db.run_core(_synchronous_core) == FULL
    # ...the database thread's (where the turn path waits when it is not, and ORM work runs)...
    assert await db.run(_synchronous_orm) == FULL
    # ...and the async engine's (sessions, migrations).
    async with db.transaction() as session:
        assert (await session.execute(text("PRAGMA synchronous"))).scalar_one() == FULL


async def test_a_message_is_on_disk_before_accept_returns_and_bursts_share_syncs(
    sqlite_database: Database,
) -> None:
    """A customer's message is committed without waiting for the disk, then the log is synced
    before ``accept`` returns (when a channel may acknowledge it); messages arriving together
    share syncs."""
    from core.agent.scripted import ScriptedAgent
    from core.catalogue import load_catalogue
    from core.conversation import ConversationService

    db = sqlite_database
    assert db.wal_path is not None
    scripted = ScriptedAgent(load_catalogue())
    service = ConversationService(db, scripted, scripted)
    try:
        before = db.log_syncs
        await service.accept(
            Inbound(channel="web", chat_key="c1", sender_id="u1", text="hi", event_id="e1")
        )
        assert db.log_syncs == before + 1
        # Twenty chats at once: every accept returns after a sync that covers its message,
        # and far fewer syncs than messages.
        before = db.log_syncs
        await asyncio.gather(
            *(
                service.accept(
                    Inbound(
                        channel="web",
                        chat_key=f"c{n}",
                        sender_id=f"u{n}",
                        text="hi",
                        event_id=f"burst-{n}",
                    )
                )
                for n in range(20)
            )
        )
        assert 1 <= db.log_syncs - before < 20
        # A batch stored without syncs (Telegram's polling), then made durable at once.
        before = db.log_syncs
        for n in range(5):
            await service.accept(
                Inbound(
                    channel="web",
                    chat_key="batch",
                    sender_id="u",
                    text=f"line {n}",
                    event_id=f"batch-{n}",
                ),
                durable=False,
            )
        assert db.log_syncs == before
        await service.sync_inbound()
        assert db.log_syncs == before + 1
    finally:
        await service.aclose()
    # Everything else still commits durably.
    assert await db.run_core(_synchronous_core) == FULL
    assert await db.run(_synchronous_orm) == FULL


async def test_only_a_relaxed_write_skips_the_sync_and_durability_comes_back(
    sqlite_database: Database,
) -> None:
    # A delivery's "sent" mark may be lost to a power cut (the item is then never resent);
    # it commits without the sync, and the connection is durable again right after.
    assert await sqlite_database.run_core_relaxed(_synchronous_core) == 1  # NORMAL
    assert await sqlite_database.run_core(_synchronous_core) == FULL
    assert await sqlite_database.run(_synchronous_orm) == FULL


async def test_a_new_database_is_private_to_its_owner(
    tmp_path: Path, permissive_umask: None
) -> None:
    data = tmp_path / "data" / "nested"
    path = data / "esoteric.db"
    db = create_database(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade_to_head(db)
        # A write through the turn path, so the write-ahead log and shared memory exist.
        await db.run_core(lambda conn: conn.exec_driver_sql("PRAGMA user_version=7"))
        assert mode(path) == 0o600
        assert [mode(side) for side in side_files(path)] == [0o600, 0o600]
        # Both directories Esoteric made.
        assert mode(data) == 0o700 and mode(data.parent) == 0o700
    finally:
        await db.dispose()


async def test_an_existing_world_readable_database_is_tightened(
    tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / "esoteric.db"
    first = create_database(f"sqlite+aiosqlite:///{path}")
    await upgrade_to_head(first)
    await first.dispose()
    leave_world_readable(path)

    db = create_database(f"sqlite+aiosqlite:///{path}")
    try:
        assert mode(path) == 0o600
        assert [mode(side) for side in side_files(path)] == [0o600, 0o600]
        await upgrade_to_head(db)  # and it still opens
        assert await db.run_core(_synchronous_core) == FULL
        # A directory that was already there may be shared: not Esoteric's to change.
        assert mode(tmp_path) == 0o755
    finally:
        await db.dispose()


async def test_a_log_that_cannot_be_synced_refuses_the_message_and_recovers(
    sqlite_database: Database, tmp_path: Path
) -> None:
    db = sqlite_database
    wal = db.wal_path
    (tmp_path / "a-file").write_text("not a folder")
    db.wal_path = tmp_path / "a-file" / "log"  # opening it fails: the disk "refuses"
    try:
        results = await asyncio.gather(*(db.sync_log() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert db._syncer is not None and db._syncer.done()  # no retry loop left spinning
    finally:
        db.wal_path = wal
    await db.sync_log()  # the disk is back: the next caller gets a round of its own

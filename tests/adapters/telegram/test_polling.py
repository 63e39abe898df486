"""Long polling confirms an update to Telegram only once Esoteric has stored it.

A ``getUpdates`` call with a higher offset makes Telegram forget the updates below it. While the
database cannot store an update (another process holds SQLite's write lock here), the stand-in
must still hold that update, as Telegram would for redelivery after a crash."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from tests.adapters.telegram.conftest import eventually, running_bot
from tests.support.telegram_server import TelegramServer, message_update

CHAT = 880_001


def _held(server: TelegramServer, update_id: int) -> bool:
    """Telegram still has the update (delivered or not, not yet confirmed)."""
    return any(p.update_id == update_id for p in server.bot.pending)


async def test_an_update_is_confirmed_only_after_it_is_stored(
    server: TelegramServer, tmp_path: Path
) -> None:
    async with running_bot(server, tmp_path, "polling") as bot:
        await bot.say(CHAT, "hi")  # the bot is up and its first update confirmed in time
        await eventually(lambda: not server.bot.pending)
        lock = sqlite3.connect(tmp_path / "esoteric.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the database is busy for a while
        try:
            update_id = bot.next_id()
            await bot.push(message_update(update_id, CHAT, "I need a home loan"))
            await server.wait_for(lambda s: bool(s.calls_to("getUpdates")) and _delivered(s))
            await asyncio.sleep(0.6)  # several polls' worth of time
            assert _held(server, update_id), "confirmed to Telegram before it was stored"
            (stored,) = lock.execute(
                "SELECT count(*) FROM messages WHERE platform_event_id = ?", (str(update_id),)
            ).fetchone()
            assert stored == 0
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        await server.wait_messages(CHAT, 2)
        await eventually(lambda: not _held(server, update_id))
        assert len(server.texts(CHAT)) == 2  # one reply, no second one from a redelivery
        assert (
            await bot.scalar(
                "SELECT count(*) FROM messages WHERE platform_event_id = :e", e=str(update_id)
            )
            == 1
        )


def _delivered(server: TelegramServer) -> bool:
    return any(p.delivered for p in server.bot.pending)


async def test_a_poll_held_too_long_fails_instead_of_confirming_and_polls_again(
    server: TelegramServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bot(server, tmp_path, "polling", store_wait=0.3) as bot:
        await bot.say(CHAT, "hi")
        lock = sqlite3.connect(tmp_path / "esoteric.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            with caplog.at_level(logging.WARNING, logger="adapters.telegram.channel"):
                update_id = bot.next_id()
                await bot.push(message_update(update_id, CHAT, "I need a home loan"))
                await server.wait_for(lambda s: _delivered(s))
                # Well past store_wait: the held poll failed rather than confirm it.
                await asyncio.sleep(1.5)
                assert _held(server, update_id), "confirmed to Telegram before it was stored"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert any("not confirming them" in r.getMessage() for r in caplog.records)
        # Once the database is free the update is stored, answered once, then confirmed.
        await server.wait_messages(CHAT, 2)
        await eventually(lambda: not _held(server, update_id), within=10)
        assert len(server.texts(CHAT)) == 2

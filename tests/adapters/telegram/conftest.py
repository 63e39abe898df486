"""A running Esoteric Telegram bot against the stand-in Bot API, in polling or webhook mode.

The bot is built by the composition root (``bot.channels.build_channels``) from settings, with
the real core (scripted agent, SQLite); webhook mode serves the real ASGI app with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import text

from adapters.telegram import TelegramChannel
from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import Runtime
from bot.settings import load_settings
from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService
from core.store.database import Database, create_database
from core.store.schema import upgrade_to_head
from tests.support.telegram_server import (
    TOKEN,
    ApiCall,
    TelegramServer,
    callback_update,
    contact_update,
    message_update,
)

WEBHOOK_SECRET = "local-test-secret_123"  # as in the shared webhook_request_headers.json


@pytest.fixture
async def server() -> AsyncIterator[TelegramServer]:
    async with TelegramServer() as running:
        yield running


async def eventually(predicate: Callable[[], Any], within: float = 15.0) -> None:
    """Wait for a condition the stand-in cannot signal (database state, queues drained)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await _holds(predicate):
        if loop.time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.02)


async def _holds(predicate: Callable[[], Any]) -> bool:
    result = predicate()
    if asyncio.iscoroutine(result):
        result = await result
    return bool(result)


@dataclass
class TelegramBot:
    """The bot under test, and a customer's-eye way to talk to it."""

    server: TelegramServer
    runtime: Runtime
    channel: TelegramChannel
    mode: str
    webhook_url: str | None = None

    @property
    def db(self) -> Database:
        return self.runtime.db

    def next_id(self) -> int:
        return self.server.next_update_id()

    async def push(self, update: dict[str, Any]) -> None:
        status = await self.server.push(update)
        assert status in (None, 200), f"webhook answered {status}"

    async def exchange(self, chat_id: int, update: dict[str, Any]) -> ApiCall:
        """Deliver an update and wait for the bot's next message to that chat."""
        before = len(self.server.calls_to("sendMessage", chat_id))
        await self.push(update)
        await self.server.wait_messages(chat_id, before + 1)
        return self.server.calls_to("sendMessage", chat_id)[before]

    async def say(self, chat_id: int, words: str) -> ApiCall:
        return await self.exchange(chat_id, message_update(self.next_id(), chat_id, words))

    async def press(self, chat_id: int, data: str, message_id: int = 1) -> ApiCall:
        return await self.exchange(chat_id, callback_update(self.next_id(), chat_id, data))

    async def share_contact(self, chat_id: int, phone: str) -> ApiCall:
        return await self.exchange(chat_id, contact_update(self.next_id(), chat_id, phone))

    async def idle(self) -> None:
        """Every accepted update handled."""
        await self.runtime.service.idle()

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.db.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.db.engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@asynccontextmanager
async def running_bot(
    server: TelegramServer,
    data_dir: Path,
    mode: str = "polling",
    **config: Any,
) -> AsyncIterator[TelegramBot]:
    """The whole bot: settings -> core -> composition root -> channel (-> ASGI app)."""
    sock = _free_socket() if mode == "webhook" else None
    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "telegram_bot_token": TOKEN,
        "telegram_api_url": server.base_url,
    }
    webhook_url = None
    if sock is not None:
        webhook_url = f"http://127.0.0.1:{sock.getsockname()[1]}/telegram/webhook"
        overrides |= {
            "telegram_webhook_url": webhook_url,
            "telegram_webhook_secret": WEBHOOK_SECRET,
        }
    settings = load_settings(**overrides)
    db = create_database(settings.resolved_database_url)
    await upgrade_to_head(db)
    catalogue = load_catalogue()
    scripted = ScriptedAgent(catalogue)
    service = ConversationService(db, scripted, scripted)
    runtime = Runtime(settings, db, catalogue, scripted, scripted, service, None)
    channels = build_channels(runtime)
    (channel,) = channels
    assert isinstance(channel, TelegramChannel)
    if config:
        # Test-only tuning (typing grace, pacing) on the channel the composition root built.
        channel = TelegramChannel(service, dataclasses.replace(channel.config, **config))
        service.register_channel(channel.name, channel)
        channels = [channel]
    http: _Server | None = None
    serving: asyncio.Task[None] | None = None
    if sock is not None:
        app = create_app(runtime, channels)
        http = _Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        serving = asyncio.create_task(http.serve(sockets=[sock]))
        await eventually(lambda: http is not None and http.started)
    try:
        await channel.start()
        try:
            yield TelegramBot(server, runtime, channel, mode, webhook_url)
        finally:
            await channel.stop()
            await service.aclose()
    finally:
        if http is not None and serving is not None:
            http.should_exit = True
            await serving
        if sock is not None:
            sock.close()
        await db.dispose()


@pytest.fixture(params=["polling", "webhook"])
async def bot(
    request: pytest.FixtureRequest, server: TelegramServer, tmp_path: Path
) -> AsyncIterator[TelegramBot]:
    async with running_bot(server, tmp_path, request.param) as running:
        yield running

"""Webhook mode on the project's ASGI app: registration, and what a bad delivery gets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.telegram.channel import ALLOWED_UPDATES
from tests.adapters.telegram.conftest import WEBHOOK_SECRET, TelegramBot, running_bot
from tests.support.telegram_server import TelegramServer, message_update, payload


@pytest.fixture
async def hooked(server: TelegramServer, tmp_path: Path) -> AsyncIterator[TelegramBot]:
    async with running_bot(server, tmp_path, "webhook") as running:
        yield running


async def stored_messages(bot: TelegramBot) -> int:
    return int(await bot.scalar("SELECT count(*) FROM messages"))


async def post(bot: TelegramBot, body: bytes, headers: dict[str, str]) -> httpx.Response:
    assert bot.webhook_url is not None
    async with httpx.AsyncClient() as client:
        return await client.post(bot.webhook_url, content=body, headers=headers)


async def test_start_registers_the_webhook_with_secret_and_update_types(
    hooked: TelegramBot,
) -> None:
    (call,) = hooked.server.calls_to("setWebhook")
    assert call.params["url"] == hooked.webhook_url
    assert call.params["secret_token"] == WEBHOOK_SECRET
    assert call.params["allowed_updates"] == list(ALLOWED_UPDATES)
    assert hooked.server.calls_to("getUpdates", ok=None) == []
    assert await hooked.channel.check() == (True, "webhook")


async def test_the_shared_sample_delivery_is_answered(hooked: TelegramBot) -> None:
    headers = payload("webhook_request_headers.json")
    body = json.dumps(payload("update_start_command.json")).encode()
    response = await post(hooked, body, headers)
    assert response.status_code == 200
    await hooked.server.wait_messages(123456789, 1)
    assert "Which loan" in hooked.server.texts(123456789)[0]


async def test_a_delivery_is_stored_before_it_is_acknowledged(hooked: TelegramBot) -> None:
    # Telegram stops redelivering at the 200, so by then the message must be in SQL.
    headers = {
        "Content-Type": "application/json",
        "X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET,
    }
    body = json.dumps(message_update(4242, 123456789, "hi")).encode()
    response = await post(hooked, body, headers)
    assert response.status_code == 200
    stored = await hooked.scalar(
        "SELECT count(*) FROM messages WHERE channel = 'telegram' AND platform_event_id = '4242'"
    )
    assert stored == 1
    await hooked.server.wait_messages(123456789, 1)
    # The same delivery again: acknowledged, not stored twice, not answered twice.
    assert (await post(hooked, body, headers)).status_code == 200
    await hooked.idle()
    assert await stored_messages(hooked) == 2  # the message and its one reply
    assert len(hooked.server.texts(123456789)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": "wrong"},
        {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": ""},
    ],
    ids=["missing", "wrong", "empty"],
)
async def test_a_bad_secret_gets_403_and_nothing_is_stored(
    hooked: TelegramBot, headers: dict[str, str]
) -> None:
    body = json.dumps(message_update(1, 123456789, "hi")).encode()
    response = await post(hooked, body, headers)
    assert response.status_code == 403
    await hooked.idle()
    assert await stored_messages(hooked) == 0
    assert hooked.server.calls_to("sendMessage") == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"message": {}}',
        b'{"update_id": "7"}',
        b'{"update_id": 7, "message": {"chat": 5}}',
    ],
    ids=["empty", "not-json", "list", "no-update-id", "string-id", "broken-message"],
)
async def test_a_malformed_body_gets_400_and_nothing_is_stored(
    hooked: TelegramBot, body: bytes
) -> None:
    headers = {
        "Content-Type": "application/json",
        "X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET,
    }
    response = await post(hooked, body, headers)
    assert response.status_code == 400
    assert "malformed" in response.json()["detail"]
    await hooked.idle()
    assert await stored_messages(hooked) == 0


async def test_health_and_readiness_include_telegram(hooked: TelegramBot) -> None:
    assert hooked.webhook_url is not None
    base = hooked.webhook_url.removesuffix("/telegram/webhook")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/health")).json() == {"status": "ok"}
        ready = (await client.get(f"{base}/ready")).json()
    assert ready["checks"]["telegram"] == {"ok": True, "detail": "webhook"}


async def test_polling_mode_has_no_webhook_route(server: TelegramServer, tmp_path: Path) -> None:
    async with running_bot(server, tmp_path, "polling") as polling:
        assert polling.channel.router() is None
        assert server.calls_to("deleteWebhook") and server.calls_to("getMe")
        assert await polling.channel.check() == (True, "polling")

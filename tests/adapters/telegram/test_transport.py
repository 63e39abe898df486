"""The aiohttp transport under python-telegram-bot: real PTB bots over real HTTP, against the
stand-in Bot API and, for what the stand-in does not model (uploads, slow answers, headers),
a small aiohttp server of the test's own."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import BodyPartReader, web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import NetworkError, TimedOut
from telegram.ext import ExtBot

from adapters.telegram.transport import AiohttpRequest
from tests.support.telegram_server import TOKEN, TelegramServer

MESSAGE = {"message_id": 7, "date": 1_700_000_000, "chat": {"id": 42, "type": "private"}}
ME = {"id": 1, "is_bot": True, "first_name": "Esoteric", "username": "esoteric_bot"}


class Recorder:
    """Answers any Bot API method, remembering what each request carried."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        fields: dict[str, Any] = {}
        files: dict[str, tuple[str | None, str | None, bytes]] = {}
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                assert isinstance(part, BodyPartReader)
                data = bytes(await part.read())
                if part.filename:
                    files[part.name or ""] = (part.filename, part.headers.get("Content-Type"), data)
                else:
                    fields[part.name or ""] = data.decode()
        elif request.content_type == "application/json":
            fields = await request.json()
        else:
            fields = dict(await request.post())
        self.requests.append(
            {
                "method": request.match_info["method"],
                "content_type": request.content_type,
                "user_agent": request.headers.get("User-Agent", ""),
                "fields": fields,
                "files": files,
            }
        )
        await asyncio.sleep(self.delay)
        result: Any = ME if request.match_info["method"] == "getMe" else MESSAGE
        return web.json_response({"ok": True, "result": result})


async def _serve(recorder: Recorder) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/bot"


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    runner, url = await _serve(rec)
    try:
        yield rec, url
    finally:
        await runner.cleanup()


def _bot(base_url: str, request: AiohttpRequest | None = None) -> ExtBot[None]:
    return ExtBot(TOKEN, base_url=base_url, request=request or AiohttpRequest())


async def test_bot_methods_reach_the_stand_in(telegram_api: TelegramServer) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Home loan", callback_data="p:home")]])
    async with _bot(telegram_api.base_url) as bot:
        sent = await bot.send_message(42, "<b>Hello</b> & welcome", reply_markup=keyboard)
        await bot.edit_message_text("Hello again", chat_id=42, message_id=sent.message_id)
    calls = telegram_api.calls_to("sendMessage")
    assert [c.params["text"] for c in calls] == ["<b>Hello</b> & welcome"]
    markup = calls[0].params["reply_markup"]
    assert markup["inline_keyboard"][0][0]["callback_data"] == "p:home"
    assert sent.chat.id == 42
    assert [c.params["text"] for c in telegram_api.calls_to("editMessageText")] == ["Hello again"]


async def test_fields_go_as_a_json_body_with_ptbs_user_agent(
    recorder: tuple[Recorder, str],
) -> None:
    rec, url = recorder
    async with _bot(url) as bot:
        await bot.send_message(
            42,
            "Namaste ₹ 25,00,000",
            reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="yes")]]),
        )
    sent = rec.requests[-1]
    assert sent["content_type"] == "application/json"
    assert sent["fields"]["text"] == "Namaste ₹ 25,00,000"
    assert sent["fields"]["chat_id"] == 42
    # Nested values are JSON objects in the body, not JSON strings inside it.
    assert sent["fields"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "yes"
    assert sent["user_agent"] == AiohttpRequest.USER_AGENT


async def test_uploads_go_multipart_with_the_other_fields(recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    document = b"%PDF-1.4 loan terms\n" * 50
    async with _bot(url) as bot:
        await bot.send_document(42, document, filename="terms.pdf", caption="Your loan terms")
    sent = rec.requests[-1]
    assert sent["method"] == "sendDocument"
    assert sent["content_type"] == "multipart/form-data"
    assert sent["fields"]["caption"] == "Your loan terms"
    assert sent["fields"]["chat_id"] == "42"
    (name, (filename, content_type, content)), *_ = sent["files"].items()
    assert filename == "terms.pdf" and content == document
    assert content_type == "application/pdf"
    assert name == "document"


async def test_a_slow_answer_times_out() -> None:
    rec = Recorder(delay=2.0)
    runner, url = await _serve(rec)
    try:
        request = AiohttpRequest(read_timeout=0.2)
        await request.initialize()
        bot = _bot(url, request)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimedOut):
            await bot.get_me()
        assert asyncio.get_running_loop().time() - started < 1.5
        await request.shutdown()
    finally:
        await runner.cleanup()


async def test_a_refused_connection_is_a_network_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the request: nothing listens
    request = AiohttpRequest(connect_timeout=2)
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as caught:
            await _bot(f"http://127.0.0.1:{port}/bot", request).get_me()
        assert not isinstance(caught.value, TimedOut)
        assert "aiohttp.ClientConnectorError" in caught.value.message
    finally:
        await request.shutdown()


async def test_lifecycle(recorder: tuple[Recorder, str]) -> None:
    _, url = recorder
    request = AiohttpRequest()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request(f"{url}{TOKEN}/getMe", "POST")
    await request.initialize()
    status, body = await request.do_request(f"{url}{TOKEN}/getMe", "POST")
    assert status == 200 and json.loads(body)["result"]["username"] == "esoteric_bot"
    await request.shutdown()
    await request.shutdown()  # a second shutdown is harmless
    await request.initialize()  # and the request can be used again, as PTB expects
    status, _ = await request.do_request(f"{url}{TOKEN}/getMe", "POST")
    assert status == 200
    await request.shutdown()
    with pytest.raises(ValueError):
        AiohttpRequest(connection_pool_size=0)

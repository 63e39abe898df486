"""The whole bot with both channels, as ``esoteric serve`` builds it: Telegram (long polling
against the stand-in Bot API) for customers, Slack (signed HTTP events through the ASGI app,
against the stand-in Web API) for the sales desk and admins. Used by the handoff and admin tests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from sqlalchemy import text

from adapters.slack import SlackChannel
from adapters.telegram import TelegramChannel
from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from tests.adapters.slack.conftest import BOT_TOKEN, SECRET, sign
from tests.support.seeded import seed_database
from tests.support.slack_server import PAYLOADS as SLACK_PAYLOADS
from tests.support.slack_server import SlackStandIn, sample
from tests.support.telegram_server import TOKEN, TelegramServer, callback_update, message_update

SALES = "C0SALES0001"
REP_A, REP_A_NAME = "U0HUMAN001", "Asha Rao"
REP_B, REP_B_NAME = "U0HUMAN002", "Vikram Shah"
SLACK_ADMIN, SLACK_ADMIN_NAME = "U0ADMIN001", "Meera Iyer"
TELEGRAM_ADMIN = 4242
ADMINS = f"telegram:{TELEGRAM_ADMIN},slack:{SLACK_ADMIN}"

# A customer's way from first question to a lead with consent (the scripted agent's flow).
QUALIFY = (
    "I need a home loan of 50 lakh for 20 years",
    "150000",
    "yes",
    "yes",
    "Ravi Kumar",
    "9876543210",
)

_serial = itertools.count(1)


async def eventually(predicate: Callable[[], Any], what: str, within: float = 15.0) -> None:
    """Wait for a condition nothing signals (database state); the limit only guards a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


def slack_stand_in_users(server: SlackStandIn) -> None:
    server.add_user(REP_A, REP_A_NAME)
    server.add_user(REP_B, REP_B_NAME)
    server.add_user(SLACK_ADMIN, SLACK_ADMIN_NAME)
    # The reps are the sales team: members of the sales channel. The admin is not.
    server.set_members(SALES, [REP_A, REP_B])


@dataclass
class Desk:
    runtime: Runtime
    telegram_api: TelegramServer
    slack_api: SlackStandIn
    telegram: TelegramChannel
    slack: SlackChannel
    http: httpx.AsyncClient

    # -- SQL ------------------------------------------------------------------------------------

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.runtime.db.engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())

    @staticmethod
    def json(value: Any) -> Any:
        """A JSON column as raw SQL returns it (text on SQLite)."""
        return json.loads(value) if isinstance(value, str) else value

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.runtime.db.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def audit(self, actor: str) -> list[tuple[str, str]]:
        return [
            (r.action, r.outcome)
            for r in await self.rows(
                "SELECT action, outcome FROM audit_log WHERE actor = :a ORDER BY id", a=actor
            )
        ]

    # -- the customer, on Telegram ----------------------------------------------------------------

    async def customer(self, chat_id: int, words: str, name: str = "Ravi") -> None:
        """Send a message from a Telegram chat and wait until its turn is over."""
        update_id = self.telegram_api.next_update_id()
        update = message_update(update_id, chat_id, words)
        update["message"]["from"]["first_name"] = name
        await self.telegram_api.push(update)
        await self.turn_done(update_id)

    async def voice(
        self,
        chat_id: int,
        data: bytes,
        duration: float,
        *,
        kind: str = "voice",
        mime: str = "audio/ogg",
        file_path: str | None = None,
        size: int | None = None,
    ) -> int:
        """Send a voice note (or ``audio``, ``video_note``) from a Telegram chat: the file is
        put on the stand-in for ``getFile`` and the download, the update pushed, and the turn
        waited for. Returns the update id."""
        update_id = await self.push_voice(
            chat_id, data, duration, kind=kind, mime=mime, file_path=file_path, size=size
        )
        await self.turn_done(update_id)
        return update_id

    async def push_voice(
        self,
        chat_id: int,
        data: bytes,
        duration: float,
        *,
        kind: str = "voice",
        mime: str = "audio/ogg",
        file_path: str | None = None,
        size: int | None = None,
    ) -> int:
        """``voice`` without waiting for the turn."""
        update_id = self.telegram_api.next_update_id()
        file_id = f"{kind}-{update_id}"
        ext = {"audio/ogg": "oga", "video/mp4": "mp4", "audio/mpeg": "mp3"}.get(mime, "bin")
        self.telegram_api.add_file(file_id, data, file_path or f"{kind}/file_{update_id}.{ext}")
        media: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "duration": max(1, round(duration)),
            "file_size": size if size is not None else len(data),
        }
        if kind != "video_note":
            media["mime_type"] = mime
        else:
            media["length"] = 240
        await self.telegram_api.push(message_update(update_id, chat_id, None, **{kind: media}))
        return update_id

    async def press(self, chat_id: int, data: str) -> None:
        update_id = self.telegram_api.next_update_id()
        await self.telegram_api.push(callback_update(update_id, chat_id, data))
        await self.turn_done(update_id)

    async def turn_done(self, update_id: int) -> None:
        async def finished() -> bool:
            status = await self.scalar(
                "SELECT status FROM messages WHERE channel = 'telegram' AND platform_event_id = :e",
                e=str(update_id),
            )
            return status is not None and status != "received"

        await eventually(finished, f"update {update_id} answered")
        await self.runtime.service.idle()

    def telegram_texts(self, chat_id: int) -> list[str]:
        return self.telegram_api.visible(chat_id)

    # -- the sales desk, on Slack -----------------------------------------------------------------

    async def _post(self, body: bytes, content_type: str) -> httpx.Response:
        headers = {"Content-Type": content_type, **sign(body, SECRET)}
        response = await self.http.post("/slack/events", content=body, headers=headers)
        assert response.status_code == 200, response.text
        return response

    async def rep_says(self, user: str, thread_ts: str, words: str, wait: bool = True) -> None:
        """A rep writes in a card's thread (a message event, as Slack delivers it)."""
        serial = next(_serial)
        body = sample("event_message_in_thread.json")
        body["event"].update(
            channel=SALES,
            user=user,
            text=words,
            ts=f"1767300000.{serial:06d}",
            thread_ts=thread_ts,
            parent_user_id="U0BOT12345",
        )
        body["event_id"] = f"EvDESK{serial:06d}"
        await self._post(json.dumps(body).encode(), "application/json")
        if wait:
            await self.slack.idle()

    def click_payload(self, user: str, action_id: str, value: str, card_ts: str) -> bytes:
        payload = sample("block_actions.payload.json")
        payload["user"] = {"id": user, "username": user.lower(), "name": user.lower()}
        payload["channel"] = {"id": SALES, "name": "sales"}
        payload["container"] = {
            "type": "message",
            "message_ts": card_ts,
            "channel_id": SALES,
            "is_ephemeral": False,
        }
        payload["message"] = {**payload["message"], "ts": card_ts}
        payload["response_url"] = self.slack_api.response_url("action")
        payload["actions"] = [
            {
                "action_id": action_id,
                "block_id": f"esoteric_handoff_{value}",
                "type": "button",
                "value": value,
                "text": {"type": "plain_text", "text": action_id},
                "action_ts": f"1767300100.{next(_serial):06d}",
            }
        ]
        return urlencode({"payload": json.dumps(payload)}).encode()

    async def click(self, user: str, action_id: str, value: str, card_ts: str) -> None:
        await self._post(
            self.click_payload(user, action_id, value, card_ts),
            "application/x-www-form-urlencoded",
        )
        await self.slack.idle()

    async def slash(self, user: str, words: str) -> str:
        """``/esoteric words`` from ``user``; the ephemeral answer's text."""
        fields = dict(parse_qsl((SLACK_PAYLOADS / "slash_command.form.txt").read_text().strip()))
        fields.update(
            command="/esoteric",
            text=words,
            user_id=user,
            channel_id=SALES,
            response_url=self.slack_api.response_url("cmd"),
            # Slack gives every invocation its own trigger id (the same body twice is a replay).
            trigger_id=f"7012345678901.1234567890123.{next(_serial):032x}",
        )
        before = len(self.slack_api.responses)
        await self._post(urlencode(fields).encode(), "application/x-www-form-urlencoded")
        await self.slack.idle()
        assert len(self.slack_api.responses) == before + 1
        _, body = self.slack_api.responses[-1]
        return "\n".join(
            b["text"]["text"] for b in body.get("blocks", []) if b["type"] == "section"
        )

    def cards(self) -> list[dict[str, Any]]:
        """Lead cards in the sales channel, as the stand-in holds them now."""
        return [
            m for m in self.slack_api.messages if m["channel"] == SALES and "thread_ts" not in m
        ]

    def thread(self, card_ts: str) -> list[str]:
        return [
            str(c.params.get("text", ""))
            for c in self.slack_api.calls_to("chat.postMessage")
            if c.params.get("channel") == SALES and c.params.get("thread_ts") == card_ts
        ]

    def ephemerals(self, user: str) -> list[str]:
        return [
            str(c.params.get("text", ""))
            for c in self.slack_api.calls_to("chat.postEphemeral")
            if c.params.get("user") == user
        ]

    def card_blocks(self, card_ts: str) -> list[dict[str, Any]]:
        """The blocks a card shows now: as posted, or as last updated."""
        posts = [
            c
            for c in self.slack_api.calls_to("chat.postMessage")
            if c.params.get("channel") == SALES and not c.params.get("thread_ts")
        ]
        index = [m["ts"] for m in self.cards()].index(card_ts)
        blocks: Any = posts[index].params.get("blocks")
        for call in self.slack_api.calls_to("chat.update"):
            if call.params.get("ts") == card_ts:
                blocks = call.params.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        return list(blocks or [])

    def card_text(self, card_ts: str) -> str:
        """Everything a card says, for assertions."""
        parts: list[str] = []
        for block in self.card_blocks(card_ts):
            if block.get("text"):
                parts.append(block["text"]["text"])
            parts += [f["text"] for f in block.get("fields", [])]
            for element in block.get("elements", []):
                shown = element.get("text")
                parts.append(shown["text"] if isinstance(shown, dict) else str(shown or ""))
        return "\n".join(str(p) for p in parts)


@asynccontextmanager
async def running_desk(
    data_dir: Path,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
    **overrides: Any,
) -> AsyncIterator[Desk]:
    """The bot as ``esoteric serve`` runs it, minus uvicorn: Slack requests go through the
    ASGI app in process; Telegram is polled. Unanswered messages are recovered at start."""
    settings = load_settings(
        data_dir=data_dir,
        telegram_bot_token=TOKEN,
        telegram_api_url=telegram_api.base_url,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=slack_api.api_url,
        slack_sales_channel=SALES,
        admins=ADMINS,
        **overrides,
    )
    await seed_database(settings)
    async with open_runtime(settings, scheduler=False) as runtime:
        channels = build_channels(runtime)
        telegram = next(c for c in channels if isinstance(c, TelegramChannel))
        slack = next(c for c in channels if isinstance(c, SlackChannel))
        app = create_app(runtime, channels)
        started: list[Any] = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://esoteric.test") as http:
            try:
                for channel in (slack, telegram):
                    await channel.start()
                    started.append(channel)
                await runtime.service.recover(startup=True)
                yield Desk(runtime, telegram_api, slack_api, telegram, slack, http)
            finally:
                for channel in reversed(started):
                    await channel.stop()

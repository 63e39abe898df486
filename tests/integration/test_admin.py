"""Admin commands from both channels (Telegram ``/stats``, Slack ``/esoteric stats``), for an
admin and for everyone else, with their effects and audit rows checked in SQL. The bot runs
whole, as ``esoteric serve`` builds it, against the stand-in Telegram and Slack servers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from core.admin import AdminConfig, AdminService
from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService
from core.i18n import tr
from core.messages import Inbound, utcnow
from core.store.database import Database
from core.store.models import Conversation, Lead, Message, User
from tests.support.desk import (
    REP_B,
    SLACK_ADMIN,
    TELEGRAM_ADMIN,
    Desk,
    running_desk,
)
from tests.support.groq_server import GroqStandIn
from tests.support.groq_server import text as llm_text
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer

CUSTOMER = 5001
OTHER_CUSTOMER = 5002
TELEGRAM_USER = 777  # not an admin
REFUSAL = "Sorry, that command is only for Esoteric admins."


def actor(channel: str, admin: bool) -> str:
    if channel == "telegram":
        return f"telegram:{TELEGRAM_ADMIN if admin else TELEGRAM_USER}"
    return f"slack:{SLACK_ADMIN if admin else REP_B}"


async def command(desk: Desk, channel: str, admin: bool, telegram: str, slack: str) -> str:
    """Run one admin command as that person on that channel; the bot's answer."""
    if channel == "slack":
        return await desk.slash(SLACK_ADMIN if admin else REP_B, slack)
    chat = TELEGRAM_ADMIN if admin else TELEGRAM_USER
    await desk.customer(chat, telegram, name="Admin" if admin else "Someone")
    return desk.telegram_texts(chat)[-1]


async def conversation_id(desk: Desk, chat: int = CUSTOMER) -> int:
    return int(
        await desk.scalar(
            "SELECT id FROM conversations WHERE chat_key = :c AND status != 'closed'", c=str(chat)
        )
    )


async def answered(desk: Desk, chat: int, words: str) -> bool:
    """Whether the bot answered a customer's message (it is stored either way)."""
    before = len(desk.telegram_texts(chat))
    await desk.customer(chat, words)
    stored = await desk.scalar(
        "SELECT count(*) FROM messages WHERE direction = 'in' AND text = :t", t=words
    )
    assert stored == 1
    return len(desk.telegram_texts(chat)) > before


Check = Callable[[Desk, dict[str, Any], bool], Awaitable[None]]


async def _nothing(desk: Desk, ctx: dict[str, Any], done: bool) -> None:
    return None


async def _customer(desk: Desk) -> dict[str, Any]:
    await desk.customer(CUSTOMER, "hi")
    return {"cid": await conversation_id(desk)}


@dataclass(frozen=True)
class Case:
    name: str
    telegram: str
    slack: str
    expect: str
    outcome: str = "ok"
    setup: Callable[[Desk], Awaitable[dict[str, Any]]] = _customer
    check: Check = _nothing
    extra: dict[str, Any] = field(default_factory=dict)


async def _paused(desk: Desk, ctx: dict[str, Any], done: bool) -> None:
    paused = await desk.scalar("SELECT paused FROM conversations WHERE id = :c", c=ctx["cid"])
    assert bool(paused) is done
    assert await answered(desk, CUSTOMER, f"still there? {done}") is not done


async def _set(desk: Desk, model: Any, where: Any, **values: Any) -> None:
    async with desk.runtime.db.transaction() as session:
        await session.execute(update(model).where(where).values(**values))


async def _setup_paused(desk: Desk) -> dict[str, Any]:
    ctx = await _customer(desk)
    await _set(desk, Conversation, Conversation.id == ctx["cid"], paused=True)
    return ctx


async def _resumed(desk: Desk, ctx: dict[str, Any], done: bool) -> None:
    assert await answered(desk, CUSTOMER, f"hello again {done}") is done


async def _bot_paused(desk: Desk, ctx: dict[str, Any], done: bool) -> None:
    flags = await desk.scalar("SELECT count(*) FROM bot_flags WHERE key = 'paused'")
    assert flags == (1 if done else 0)
    assert await answered(desk, OTHER_CUSTOMER, f"anyone? {done}") is not done


async def _setup_idle(desk: Desk) -> dict[str, Any]:
    ctx = await _customer(desk)
    old = utcnow() - timedelta(hours=2)
    await _set(desk, Conversation, Conversation.id == ctx["cid"], last_activity_at=old)
    return ctx


async def _cleaned(desk: Desk, ctx: dict[str, Any], done: bool) -> None:
    status = await desk.scalar("SELECT status FROM conversations WHERE id = :c", c=ctx["cid"])
    assert status == ("closed" if done else "active")


async def _banned(desk: Desk, ctx: dict[str, Any], done: bool) -> None:
    banned = await desk.scalar(
        "SELECT banned FROM users WHERE channel = 'telegram' AND external_id = :e",
        e=str(CUSTOMER),
    )
    assert bool(banned) is done
    assert await answered(desk, CUSTOMER, f"are you there {done}") is not done


async def _setup_banned(desk: Desk) -> dict[str, Any]:
    ctx = await _customer(desk)
    await _set(desk, User, User.external_id == str(CUSTOMER), banned=True)
    return ctx


async def _setup_subscribers(desk: Desk) -> dict[str, Any]:
    for chat in (CUSTOMER, OTHER_CUSTOMER):
        await desk.customer(chat, "/subscribe")
    return {}


async def _drafted(desk: Desk, ctx: dict[str, Any], done: bool) -> None:
    rows = await desk.rows("SELECT status, recipients, sent FROM broadcasts")
    assert [tuple(r) for r in rows] == ([("draft", 2, 0)] if done else [])
    # A dry run sends nothing.
    assert not any("Branch closed" in t for t in desk.telegram_texts(CUSTOMER))


async def _setup_lead(desk: Desk) -> dict[str, Any]:
    ctx = await _customer(desk)
    async with desk.runtime.db.transaction() as session:
        await session.execute(
            insert(Lead).values(
                conversation_id=ctx["cid"],
                product="home",
                name="Ravi Kumar",
                phone="+919876543210",
                consent=True,
                status="new",
                created_at=utcnow(),
            )
        )
    return ctx


CASES = [
    Case("help", "/admin", "admin help", "Admin commands"),
    Case("whoami", "/whoami", "whoami", "an Esoteric admin"),
    Case("stats", "/stats", "stats", "Leads today: 1", setup=_setup_lead),
    Case("sessions", "/sessions", "sessions", "telegram:5001 Ravi (active"),
    Case("pause", "/pause {cid}", "pause {cid}", "Paused conversation #{cid}", check=_paused),
    Case(
        "pause",
        "/pause all",
        "pause all",
        "Paused: the bot stores every message",
        check=_bot_paused,
        extra={"id": "pause-all"},
    ),
    Case(
        "resume",
        "/resume {cid}",
        "resume {cid}",
        "Resumed conversation #{cid}",
        setup=_setup_paused,
        check=_resumed,
    ),
    Case(
        "cleanup",
        "/cleanup now",
        "cleanup now",
        "closed 1 idle session",
        setup=_setup_idle,
        check=_cleaned,
    ),
    Case(
        "kb",
        "/kb reload",
        "kb reload",
        "No knowledge base is open",
        outcome="failed",  # no embedding model in this run: the admin is told why
    ),
    Case("ban", "/ban telegram:5001", "ban telegram:5001", "Banned telegram:5001", check=_banned),
    Case(
        "unban",
        "/unban telegram:5001",
        "unban telegram:5001",
        "Unbanned telegram:5001",
        setup=_setup_banned,
        check=lambda desk, ctx, done: _banned(desk, ctx, not done),
    ),
    Case(
        "broadcast",
        "/broadcast Branch closed on Friday",
        "broadcast Branch closed on Friday",
        "would reach 2 customers",
        setup=_setup_subscribers,
        check=_drafted,
    ),
]


@pytest.mark.parametrize("channel", ["telegram", "slack"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.extra.get("id", c.name))
async def test_admin_command(
    case: Case,
    channel: str,
    tmp_path: Path,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        ctx = await case.setup(desk)
        telegram, slack = case.telegram.format(**ctx), case.slack.format(**ctx)

        # Anyone else: a polite refusal, audited, and nothing changes.
        reply = await command(desk, channel, False, telegram, slack)
        if case.name == "whoami":
            assert f"You are {actor(channel, False)}" in reply and "not an Esoteric admin" in reply
        else:
            assert REFUSAL in reply
        assert await desk.audit(actor(channel, False)) == [(case.name, "refused")]
        await case.check(desk, ctx, False)

        # An admin: done, audited.
        reply = await command(desk, channel, True, telegram, slack)
        assert case.expect.format(**ctx) in reply
        assert await desk.audit(actor(channel, True)) == [(case.name, case.outcome)]
        await case.check(desk, ctx, True)


async def test_broadcast_is_confirmed_once_and_paced(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api, broadcast_per_second=5) as desk:
        admin = desk.runtime.admin
        assert admin is not None
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        admin.sleep = sleep
        subscribers = [CUSTOMER, OTHER_CUSTOMER, 5003]
        for chat in subscribers:
            await desk.customer(chat, "/subscribe")
        await desk.customer(5004, "/subscribe")
        await desk.customer(5004, "/unsubscribe")  # opted out again: not a recipient
        await desk.customer(5005, "hello")  # never opted in

        # The dry run on Telegram answers with the count and a confirm button.
        await desk.customer(TELEGRAM_ADMIN, "/broadcast New rates from Monday!", name="Admin")
        dry_run = telegram_api.calls_to("sendMessage", TELEGRAM_ADMIN)[-1]
        assert "would reach 3 customers" in dry_run.text
        assert not any("New rates" in t for t in desk.telegram_texts(CUSTOMER))
        markup = dry_run.params["reply_markup"]
        markup = json.loads(markup) if isinstance(markup, str) else markup
        [[button]] = markup["inline_keyboard"]
        assert button["text"] == "Send to 3"
        await desk.press(TELEGRAM_ADMIN, button["callback_data"])
        assert "Sending broadcast #1 to 3 customers" in desk.telegram_texts(TELEGRAM_ADMIN)[-1]
        await admin.idle()
        for chat in subscribers:
            assert desk.telegram_texts(chat)[-1] == "New rates from Monday!"
        for chat in (5004, 5005):
            assert "New rates from Monday!" not in desk.telegram_texts(chat)
        # Paced: one pause of 1/5 s between consecutive messages.
        assert waits == [0.2, 0.2]
        row = (await desk.rows("SELECT status, recipients, sent, failed FROM broadcasts"))[0]
        assert tuple(row) == ("sent", 3, 3, 0)

        # Confirming again (the Slack admin this time) sends nothing twice.
        reply = await desk.slash(SLACK_ADMIN, "broadcast send 1")
        assert "already sent" in reply
        assert sum("New rates" in t for t in desk.telegram_texts(CUSTOMER)) == 1
        assert await desk.audit(f"telegram:{TELEGRAM_ADMIN}") == [
            ("broadcast", "ok"),
            ("broadcast", "ok"),
            ("broadcast_done", "ok"),
        ]
        assert await desk.audit(f"slack:{SLACK_ADMIN}") == [("broadcast", "failed")]


async def test_broadcast_reaches_each_customer_in_their_language(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        admin = desk.runtime.admin
        assert admin is not None

        async def sleep(seconds: float) -> None:
            return None

        admin.sleep = sleep
        hindi, hinglish, english = 5101, 5102, 5103
        await desk.customer(hindi, "नमस्ते, मुझे होम लोन चाहिए")
        await desk.customer(hinglish, "mujhe ghar ke liye loan chahiye")
        await desk.customer(english, "I need a home loan please")
        for chat in (hindi, hinglish, english):
            await desk.customer(chat, "/subscribe")
        # A customer who tries an admin command is refused in their own language.
        await desk.customer(hindi, "/broadcast नमस्ते")
        assert desk.telegram_texts(hindi)[-1] == tr(
            "hi",
            "Sorry, that command is only for Esoteric admins. If you need help with a loan, "
            "just ask me.",
        )

        # Without its English text a broadcast is refused: someone would get nothing.
        await desk.customer(TELEGRAM_ADMIN, "/broadcast [hi] सोमवार से नई दरें!", name="Admin")
        assert "needs its English text" in desk.telegram_texts(TELEGRAM_ADMIN)[-1]

        # English and Hindi only: the dry run says who gets the English instead.
        await desk.customer(
            TELEGRAM_ADMIN, "/broadcast New rates from Monday! [hi] सोमवार से नई दरें!", name="Admin"
        )
        dry_run = desk.telegram_texts(TELEGRAM_ADMIN)[-1]
        assert "English (1): New rates from Monday!" in dry_run
        assert "Hindi (1): सोमवार से नई दरें!" in dry_run
        assert "No text given for 1 in Hinglish: they get the English." in dry_run
        await desk.customer(TELEGRAM_ADMIN, "/broadcast send 1", name="Admin")
        await admin.idle()
        assert desk.telegram_texts(hindi)[-1] == "सोमवार से नई दरें!"
        assert desk.telegram_texts(hinglish)[-1] == "New rates from Monday!"
        assert desk.telegram_texts(english)[-1] == "New rates from Monday!"

        await desk.customer(
            TELEGRAM_ADMIN,
            "/broadcast Branch closed Friday. [hinglish] Friday ko branch band hai. "
            "[hi] शुक्रवार को शाखा बंद है।",
            name="Admin",
        )
        assert "No text given" not in desk.telegram_texts(TELEGRAM_ADMIN)[-1]
        await desk.customer(TELEGRAM_ADMIN, "/broadcast send 2", name="Admin")
        await admin.idle()
        assert desk.telegram_texts(hindi)[-1] == "शुक्रवार को शाखा बंद है।"
        assert desk.telegram_texts(hinglish)[-1] == "Friday ko branch band hai."
        assert desk.telegram_texts(english)[-1] == "Branch closed Friday."
        row = (await desk.rows("SELECT status, recipients, sent FROM broadcasts WHERE id = 2"))[0]
        assert tuple(row) == ("sent", 3, 3)


async def test_a_banned_user_costs_nothing(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    groq = GroqStandIn()
    await groq.start()
    try:
        settings = {"GROQ_API_KEY": "gsk_FakeKeyForLocalTestsOnly", "GROQ_BASE_URL": groq.base_url}
        async with running_desk(tmp_path, telegram_api, slack_api, **settings) as desk:
            groq.default = llm_text("Hello! How can I help with your loan?")
            await desk.customer(CUSTOMER, "hello")
            assert len(groq.requests) == 1
            await desk.slash(SLACK_ADMIN, "ban telegram:5001")
            before = len(desk.telegram_texts(CUSTOMER))
            for words in ("hello?", "/start", "/human", "I want a home loan"):
                await desk.customer(CUSTOMER, words)
            # Stored, never answered, and not one LLM request or lead card.
            assert len(desk.telegram_texts(CUSTOMER)) == before
            assert len(groq.requests) == 1
            assert desk.cards() == []
            statuses = await desk.rows(
                "SELECT status FROM messages WHERE direction = 'in' ORDER BY id"
            )
            assert [r.status for r in statuses] == ["answered"] + ["ignored"] * 4
            # Another customer is answered as usual.
            await desk.customer(OTHER_CUSTOMER, "hi there")
            assert len(groq.requests) == 2
    finally:
        await groq.stop()


async def test_stats_count_fallbacks_on_both_databases(database: Database) -> None:
    scripted = ScriptedAgent(load_catalogue())
    service = ConversationService(database, scripted, scripted)
    admin = AdminService(
        database, service.outbox, service.counters, AdminConfig(admins=frozenset({"telegram:1"}))
    )
    await service.handle(Inbound("telegram", "9", "9", "hi", event_id="e1"))
    now = datetime.now(UTC)
    async with database.transaction() as session:
        conversation = await session.scalar(select(Message.conversation_id))
        for reason in ("timeout", "timeout", "no_key"):
            session.add(
                Message(
                    conversation_id=conversation,
                    channel="telegram",
                    direction="out",
                    author="bot",
                    text="fallback answer",
                    status="sent",
                    created_at=now,
                    meta={"fallback": True, "fallback_reason": reason},
                )
            )
    reply = await admin.run("telegram:1", "stats", [])
    assert "LLM errors today: 2; fallbacks to the scripted agent: 3" in reply.text
    assert "Messages today: 1 in, 4 out" in reply.text
    assert "Active sessions: 1" in reply.text
    unknown = await admin.run("telegram:1", "frobnicate", [])
    assert "I don't know the admin command 'frobnicate'" in unknown.text

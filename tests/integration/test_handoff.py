"""The handoff service on real databases (SQLite and Postgres), with the real Slack adapter as
its sales desk against the stand-in Slack: claim races, timers run by two processes at once,
business hours, and a relay the desk refused."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, text

from adapters.slack import SlackChannel, SlackConfig
from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService
from core.errors import ChannelError
from core.handlers import Counters, default_handlers
from core.handoff import HandoffConfig, HandoffService
from core.hours import BusinessHours
from core.i18n import tr
from core.jobs import close_idle_sessions
from core.messages import Inbound, utcnow
from core.outbox import Outbox
from core.salesdesk import SalesDesk
from core.store.database import Database
from core.store.models import AuditEntry, Handoff, Message
from core.store.turns import TurnStore
from tests.support.desk import REP_A, REP_A_NAME, SALES
from tests.support.slack_server import SlackStandIn
from tests.support.waiting import wait_until

_events = itertools.count(1)
START = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # a Thursday


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_service(db: Database) -> ConversationService:
    scripted = ScriptedAgent(load_catalogue())
    return ConversationService(db, scripted, scripted)


@pytest.fixture
async def desk(database: Database, slack_api: SlackStandIn) -> AsyncIterator[SlackChannel]:
    service = make_service(database)
    channel = SlackChannel(
        service,
        SalesDesk(database, load_catalogue()),
        SlackConfig(
            bot_token="xoxb-test",
            signing_secret="s",
            api_url=slack_api.api_url,
            sales_channel=SALES,
        ),
    )
    await channel.start()
    try:
        yield channel
    finally:
        await channel.stop()


def handoffs(
    db: Database,
    desk: SlackChannel | None,
    clock: Clock,
    hours: BusinessHours | None = None,
    service: ConversationService | None = None,
) -> HandoffService:
    service = service or make_service(db)
    handoff = HandoffService(
        db, service.outbox, load_catalogue(), HandoffConfig(hours=hours), clock=clock
    )
    if desk is not None:
        handoff.attach_desk(desk)
    return handoff


async def conversation(db: Database, chat: str = "5001", words: str = "hello") -> int:
    """A customer's conversation, made by the turn pipeline itself."""
    service = make_service(db)
    outcome = await service.handle(
        Inbound("telegram", chat, chat, words, event_id=f"u-{next(_events)}", sender_name="Ravi")
    )
    assert outcome is not None
    return outcome.conversation_id


async def waiting_handoff(db: Database, conversation_id: int, card_ts: str = "1.000100") -> int:
    """A handoff row as a request leaves it (without a desk to post the card)."""
    async with db.transaction() as session:
        return int(
            (
                await session.execute(
                    insert(Handoff)
                    .values(
                        conversation_id=conversation_id,
                        reason="human",
                        status="waiting",
                        requested_at=START,
                        card_channel=SALES,
                        card_ts=card_ts,
                        sla_due_at=START + timedelta(minutes=10),
                        last_activity_at=START,
                    )
                    .returning(Handoff.id)
                )
            ).scalar_one()
        )


async def test_many_reps_claim_at_once_exactly_one_wins(database: Database) -> None:
    conversation_id = await conversation(database)
    handoff_id = await waiting_handoff(database, conversation_id)
    service = handoffs(database, None, Clock())
    reps = [f"U0REP{i:05d}" for i in range(8)]
    results = await asyncio.gather(
        *(service.claim(handoff_id, rep, f"Rep {i}") for i, rep in enumerate(reps))
    )
    winners = [r for r in results if r.won]
    assert len(winners) == 1
    winner = winners[0].holder_id
    # Every loser is told who has it.
    assert {r.holder_id for r in results if not r.won} == {winner}
    async with database.transaction() as session:
        row = (
            await session.execute(
                text("SELECT status, assigned_to FROM conversations WHERE id = :c"),
                {"c": conversation_id},
            )
        ).one()
        audit = (
            await session.execute(
                select(AuditEntry.actor, AuditEntry.outcome).order_by(AuditEntry.id)
            )
        ).all()
    assert tuple(row) == ("handoff", winner)
    assert sorted(o for _, o in audit) == ["ok"] + ["refused"] * 7
    assert {a for a, o in audit if o == "ok"} == {f"slack:{winner}"}


async def test_timers_fire_once_when_two_processes_tick(
    database: Database, desk: SlackChannel, slack_api: SlackStandIn
) -> None:
    clock = Clock()
    first, second = handoffs(database, desk, clock), handoffs(database, desk, clock)
    waiting = await first.request(await conversation(database, "6001"), "human")
    claimed = await first.request(await conversation(database, "6002"), "lead")
    assert waiting is not None and claimed is not None
    assert (await first.claim(claimed, REP_A, REP_A_NAME)).won
    cards = [m["ts"] for m in slack_api.messages if "thread_ts" not in m]

    clock.now = START + timedelta(minutes=11)
    reports = await asyncio.gather(first.tick(), second.tick())
    assert sum(r.reminded for r in reports) == 1
    reminders = [
        c for c in slack_api.calls_to("chat.postMessage") if "Reminder" in c.params.get("text", "")
    ]
    assert [c.params["thread_ts"] for c in reminders] == [cards[0]]
    # The next reminder waits a whole SLA period after this one.
    clock.now += timedelta(minutes=5)
    assert (await first.tick()).reminded == 0
    clock.now += timedelta(minutes=6)
    assert (await first.tick()).reminded == 1

    clock.now = START + timedelta(minutes=45)
    reports = await asyncio.gather(first.tick(), second.tick())
    assert sum(r.returned for r in reports) == 1
    async with database.transaction() as session:
        statuses = dict((await session.execute(select(Handoff.id, Handoff.status))).tuples().all())
        notices = (
            await session.scalars(
                select(Message.text).where(Message.author == "bot").order_by(Message.id)
            )
        ).all()
    assert statuses == {waiting: "waiting", claimed: "returned"}
    # The customer waiting was told the expected wait once; the returned one, once.
    assert sum("expected wait" in n for n in notices) == 1
    assert sum("back to help" in n for n in notices) == 1


async def test_a_reminder_slack_did_not_take_is_posted_by_the_next_tick(
    database: Database, desk: SlackChannel, slack_api: SlackStandIn
) -> None:
    if not database.is_postgres:
        pytest.skip("several processes (and so this guarantee) need Postgres")
    clock = Clock()
    service = handoffs(database, desk, clock)
    assert await service.request(await conversation(database, "6101"), "human") is not None
    clock.now = START + timedelta(minutes=11)
    # The post fails as a process killed mid-call would leave it: the claim is not kept.
    slack_api.outage("chat.postMessage")
    assert (await service.tick()).reminded == 0
    assert (await service.tick()).reminded == 1
    reminders = [
        c for c in slack_api.calls_to("chat.postMessage") if "Reminder" in c.params.get("text", "")
    ]
    assert len(reminders) == 2  # the refused one, then the one that went out
    assert (await service.tick()).reminded == 0


async def test_a_card_the_desk_refused_is_posted_by_the_next_tick(
    database: Database, desk: SlackChannel, slack_api: SlackStandIn
) -> None:
    service = handoffs(database, desk, Clock())
    conversation_id = await conversation(database)
    slack_api.fail("chat.postMessage", "channel_not_found")
    with pytest.raises(ChannelError):
        await service.request(conversation_id, "human")
    async with database.transaction() as session:
        card_ts = await session.scalar(select(Handoff.card_ts))
    assert card_ts is None  # stored, not lost
    assert (await service.tick()).cards_posted == 1
    async with database.transaction() as session:
        card_ts = await session.scalar(select(Handoff.card_ts))
    assert card_ts is not None
    # A second request for the same conversation refreshes the one handoff, never a second.
    await service.request(conversation_id, "lead")
    async with database.transaction() as session:
        assert len((await session.scalars(select(Handoff.id))).all()) == 1


async def test_a_customer_message_the_desk_refused_is_relayed_when_the_turn_is_retried(
    database: Database, desk: SlackChannel, slack_api: SlackStandIn
) -> None:
    clock = Clock()
    scripted = ScriptedAgent(load_catalogue())
    outbox = Outbox(TurnStore(database))
    hand = HandoffService(database, outbox, load_catalogue(), HandoffConfig(), clock=clock)
    hand.attach_desk(desk)
    counters = Counters()
    service = ConversationService(
        database,
        scripted,
        scripted,
        outbox=outbox,
        handlers=default_handlers(
            database, scripted, scripted, counters, handoff=hand, max_text_chars=4000
        ),
        counters=counters,
        handoff=hand,
    )
    service.register_channel("slack", desk)  # the desk's thread is reached through the outbox
    conversation_id = await conversation(database)
    handoff_id = await hand.request(conversation_id, "human")
    assert handoff_id is not None
    assert (await hand.claim(handoff_id, REP_A, REP_A_NAME)).won
    slack_api.fail("chat.postMessage", "ratelimited")
    outcome = await service.handle(
        Inbound(
            "telegram", "5001", "5001", "Is anyone there?", event_id="u-relay", sender_name="Ravi"
        )
    )
    # Relayed, not answered by the bot; the desk refused the first try.
    assert outcome is not None and outcome.reply is None and outcome.status == "ignored"

    def relays() -> list[object]:
        return [
            c
            for c in slack_api.calls_to("chat.postMessage")
            if "Is anyone there?" in c.params["text"]
        ]

    assert len(relays()) == 1  # refused (the stand-in records it)
    # The outbox tries again after the rate limit, once.
    await wait_until(lambda: len(relays()) == 2, limit=10, what="the relay sent again")
    await service.idle()
    assert len(relays()) == 2
    async with database.transaction() as session:
        statuses = (
            await session.execute(text("SELECT status FROM outbox WHERE kind = 'relay'"))
        ).all()
    assert [r[0] for r in statuses] == ["sent"]
    await service.aclose()


def test_business_hours() -> None:
    hours = BusinessHours.parse("Mon-Fri 09:30-18:00", "Asia/Kolkata")
    thursday_noon_ist = datetime(2026, 11, 26, 6, 30, tzinfo=UTC)
    assert hours.is_open(thursday_noon_ist)
    saturday = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)
    assert not hours.is_open(saturday)
    monday = hours.next_open(saturday)
    assert (monday.weekday(), monday.hour, monday.minute) == (0, 9, 30)
    assert monday.astimezone(UTC) == datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
    late_friday = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)  # 18:30 IST
    assert hours.next_open(late_friday) == monday
    assert hours.describe() == "Mon-Fri 09:30-18:00 (Asia/Kolkata)"
    weekend = BusinessHours.parse("Sat-Sun 10:00-14:00")
    assert weekend.days == frozenset({5, 6})
    for bad, why in [
        ("Mon-Fri 9-18", "is not like"),
        ("Mon-Fry 09:00-18:00", "unknown day"),
        ("Mon 18:00-09:00", "must end after"),
        ("Mon 25:00-26:00", "bad time"),
    ]:
        with pytest.raises(ValueError, match=why):
            BusinessHours.parse(bad)
    with pytest.raises(ValueError, match="unknown time zone"):
        BusinessHours.parse("Mon 09:00-10:00", "Mars/Olympus")


async def test_outside_business_hours_the_customer_is_told_when(
    database: Database, desk: SlackChannel, slack_api: SlackStandIn
) -> None:
    saturday = Clock(datetime(2026, 11, 28, 6, 30, tzinfo=UTC))
    hours = BusinessHours.parse("Mon-Fri 09:30-18:00", "Asia/Kolkata")
    service = handoffs(database, desk, saturday, hours=hours)
    conversation_id = await conversation(database)
    await service.request(conversation_id, "human")
    async with database.transaction() as session:
        handoff = (await session.scalars(select(Handoff))).one()
        notice = await session.scalar(
            select(Message.text).where(Message.meta["handoff"].as_string() == "after_hours")
        )
    monday_opening = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
    assert handoff.sla_due_at == monday_opening + timedelta(minutes=10)
    assert notice is not None and "Monday 30 November, 09:30" in notice
    assert "Mon-Fri 09:30-18:00 (Asia/Kolkata)" in notice
    # No reminders at the weekend, however long it waits.
    saturday.now += timedelta(hours=30)
    assert (await service.tick()).reminded == 0
    assert len(slack_api.calls_to("chat.postMessage")) == 1  # the card only


@pytest.mark.parametrize(
    ("words", "language", "hours", "opens"),
    [
        ("नमस्ते, मुझे होम लोन चाहिए", "hi", "सोम-शुक्र 09:30-18:00", "सोमवार 30 नवंबर, 09:30"),
        (
            "mujhe ghar ke liye loan chahiye",
            "hinglish",
            "Mon-Fri 09:30-18:00",
            "Monday 30 November, 09:30",
        ),
    ],
)
async def test_the_customer_is_told_in_their_language(
    database: Database,
    desk: SlackChannel,
    slack_api: SlackStandIn,
    words: str,
    language: str,
    hours: str,
    opens: str,
) -> None:
    saturday = Clock(datetime(2026, 11, 28, 6, 30, tzinfo=UTC))
    service = handoffs(
        database, desk, saturday, hours=BusinessHours.parse("Mon-Fri 09:30-18:00", "Asia/Kolkata")
    )
    conversation_id = await conversation(database, words=words)
    await service.request(conversation_id, "human")
    # Monday morning: still nobody has claimed it past the SLA; the customer hears the wait.
    saturday.now = datetime(2026, 11, 30, 4, 15, tzinfo=UTC)
    assert (await service.tick()).reminded == 1
    async with database.transaction() as session:
        notices = {
            row.meta["handoff"]: row.text
            for row in (await session.execute(select(Message.text, Message.meta))).all()
            if "handoff" in row.meta
        }
    assert notices["after_hours"] == tr(
        language,
        "Our advisors are available {hours}. Someone will reply from {opens}. Meanwhile I'm "
        "here for any questions.",
        hours=f"{hours} (Asia/Kolkata)",
        opens=opens,
    )
    assert notices["wait"] == tr(
        language,
        "Thanks for waiting: all our advisors are busy right now. The expected wait is about "
        "{minutes} more minutes, and I'm here for questions meanwhile.",
        minutes=10,
    )


async def test_a_claim_after_the_conversation_closed_follows_the_customer(
    database: Database, desk: SlackChannel
) -> None:
    service = handoffs(database, desk, Clock())
    reopened = await service.request(await conversation(database, "7001"), "human")
    moved = await service.request(await conversation(database, "7002"), "human")
    assert reopened is not None and moved is not None
    # Both conversations are closed (idle cleanup, /reset) before any rep claims.
    await close_idle_sessions(database, 1, lambda: utcnow() + timedelta(hours=1))
    # 7002 wrote again meanwhile: a new conversation is open on that chat.
    newer = await conversation(database, "7002")
    assert (await service.claim(reopened, REP_A, REP_A_NAME)).won
    assert (await service.claim(moved, REP_A, REP_A_NAME)).won
    async with database.transaction() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT c.chat_key, c.id, c.status, h.id AS handoff FROM conversations c "
                    "JOIN handoffs h ON h.conversation_id = c.id ORDER BY c.chat_key"
                )
            )
        ).all()
        open_per_chat = (
            await session.execute(
                text(
                    "SELECT chat_key, count(*) FROM conversations WHERE status != 'closed' "
                    "GROUP BY chat_key ORDER BY chat_key"
                )
            )
        ).all()
    assert [(r.chat_key, r.status, r.handoff) for r in rows] == [
        ("7001", "handoff", reopened),
        ("7002", "handoff", moved),
    ]
    assert rows[1].id == newer
    assert [tuple(r) for r in open_per_chat] == [("7001", 1), ("7002", 1)]

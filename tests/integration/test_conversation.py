"""The turn pipeline on SQLite and Postgres: dedup, ordering, recovery, sessions, leads."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from core.catalogue import load_catalogue
from core.jobs import close_idle_sessions
from core.loan import emi
from core.messages import utcnow
from core.money import format_money
from core.store import turns
from core.store.database import Database
from core.store.models import Conversation, Lead, Message
from tests.support.builders import customer, service_for
from tests.support.recording import RecordingPort
from tests.support.waiting import wait_until


async def _count(db: Database, model: type, *where: object) -> int:
    async with db.transaction() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_loan_conversation_ends_with_exact_emi_and_a_lead(database: Database) -> None:
    service = service_for(database)
    port = RecordingPort()
    service.register_channel("test", port)
    for text in [
        "hi",
        "I need a home loan",
        "25 lakh",
        "20 years",
        "my salary is 1.2 lakh a month",
    ]:
        await service.handle(customer(text))
    home = load_catalogue().get("home")
    expected = format_money(emi(2_500_000, home.annual_rate, 240))
    assert f"EMI: {expected} per month" in port.texts[-1]
    assert "eligible" in port.texts[-1] and "not an approval" in port.texts[-1]
    for text in ["yes", "yes", "Asha Verma", "98765 43210"]:
        await service.handle(customer(text))
    assert "+919876543210" in port.texts[-1]
    async with database.transaction() as s:
        lead = (await s.scalars(select(Lead))).one()
    assert (lead.product, lead.amount, lead.tenure_months) == ("home", Decimal(2_500_000), 240)
    assert lead.monthly_income == Decimal(120_000) and lead.emi == emi(
        2_500_000, home.annual_rate, 240
    )
    assert lead.consent and lead.consent_at is not None
    assert (lead.name, lead.phone, lead.eligible) == ("Asha Verma", "+919876543210", True)


async def test_same_event_twice_gives_one_message_and_one_reply(database: Database) -> None:
    service = service_for(database)
    port = RecordingPort()
    service.register_channel("test", port)
    first = await service.handle(customer("hi", event_id="update-42"))
    second = await service.handle(customer("hi", event_id="update-42"))
    assert first is not None and second is None
    assert len(port.sent) == 1
    assert await _count(database, Message, Message.direction == "in") == 1
    assert await _count(database, Message, Message.direction == "out") == 1
    assert service.counters.dedup_hits == 1


async def test_concurrent_deliveries_of_one_event_reply_once(database: Database) -> None:
    service = service_for(database)
    port = RecordingPort()
    service.register_channel("test", port)
    results = await asyncio.gather(
        *(service.handle(customer("hi", event_id="same")) for _ in range(5))
    )
    assert sum(r is not None for r in results) == 1
    assert len(port.sent) == 1


async def test_fifty_concurrent_messages_are_answered_in_arrival_order(database: Database) -> None:
    # Each message its own turn, and no flood control: one sender sends all fifty.
    service = service_for(database, merge_messages=1, flood_per_minute=1000)
    port = RecordingPort(delay=0.001)
    service.register_channel("test", port)
    texts = [f"message number {i}" for i in range(50)]
    outcomes = await asyncio.gather(*(service.handle(customer(t)) for t in texts))
    assert all(o is not None for o in outcomes)
    async with database.transaction() as s:
        inbound = (
            await s.execute(
                select(Message.id, Message.text)
                .where(Message.direction == "in")
                .order_by(Message.id)
            )
        ).all()
        replies = (
            await s.scalars(
                select(Message.reply_to_id).where(Message.direction == "out").order_by(Message.id)
            )
        ).all()
    assert [t for _, t in inbound] == texts  # stored in arrival order
    assert list(replies) == [i for i, _ in inbound]  # answered in that order
    # Delivered in that order too: each outcome's reply is the one the channel saw at its place.
    assert [o.reply.text for o in outcomes if o and o.reply] == port.texts


async def test_follow_ups_queue_while_a_turn_runs(database: Database) -> None:
    service = service_for(database, merge_messages=1)  # each message its own turn
    port = RecordingPort(gate=asyncio.Event())
    service.register_channel("test", port)
    first = asyncio.create_task(service.handle(customer("hi")))
    follow_ups = [
        asyncio.create_task(service.handle(customer(t))) for t in ["I need a car loan", "5 lakh"]
    ]
    # The first turn is held in delivery; both follow-ups get stored and wait their turn.
    await wait_until(lambda: service.queued == 3, what="three turns queued")
    assert await _count(database, Message, Message.direction == "in") == 3
    assert port.sent == []
    port.gate.set()
    await asyncio.gather(first, *follow_ups)
    assert len(port.sent) == 3
    assert "Car Loan" in port.texts[1] and "repay" in port.texts[2]


async def test_lines_queued_behind_a_turn_are_answered_together(database: Database) -> None:
    service = service_for(database)  # merging on, as by default
    port = RecordingPort(gate=asyncio.Event())
    service.register_channel("test", port)
    first = asyncio.create_task(service.handle(customer("hi")))
    await wait_until(lambda: service.queued == 1, what="the first turn running")
    follow_ups = [
        asyncio.create_task(service.handle(customer(t))) for t in ["I need a car loan", "5 lakh"]
    ]
    await wait_until(lambda: service.queued == 3, what="both follow-ups queued")
    port.gate.set()
    outcomes = await asyncio.gather(first, *follow_ups)
    # Two replies: the greeting, then one answer to both lines (the product and the amount).
    assert len(port.sent) == 2
    assert "Car Loan" in port.texts[1] and "repay" in port.texts[1]
    # Both lines' outcomes are that one reply, and both are answered by it.
    assert outcomes[1] is not None and outcomes[2] is not None
    assert outcomes[1].reply_id == outcomes[2].reply_id
    async with database.transaction() as s:
        statuses = (await s.scalars(select(Message.status).where(Message.direction == "in"))).all()
    assert list(statuses) == ["answered"] * 3


async def test_unanswered_message_is_answered_once_by_recovery(database: Database) -> None:
    # A crash between storing and answering leaves a "received" row behind.
    recorded = await database.run_core(
        turns.record_inbound, customer("hi"), utcnow(), timedelta(minutes=30)
    )
    assert recorded is not None
    service = service_for(database)
    port = RecordingPort()
    service.register_channel("test", port)
    assert await service.recover(startup=True, wait=True) == 1
    assert await service.recover(startup=True, wait=True) == 0
    assert len(port.sent) == 1 and "Esoteric" in port.texts[0]
    assert await _count(database, Message, Message.reply_to_id == recorded.message_id) == 1


async def test_failed_delivery_is_kept_and_retried_by_recovery(database: Database) -> None:
    service = service_for(database)
    port = RecordingPort(fail_next=1)
    service.register_channel("test", port)
    await service.handle(customer("hi"))
    assert port.sent == []
    async with database.transaction() as s:
        status = await s.scalar(select(Message.status).where(Message.direction == "out"))
    assert status == "failed"


async def test_idle_sessions_close_and_a_new_one_welcomes_back(database: Database) -> None:
    now = [utcnow()]
    service = service_for(database, idle_minutes=30, clock=lambda: now[0])
    port = RecordingPort()
    service.register_channel("test", port)
    await service.handle(customer("I need a personal loan"))
    now[0] += timedelta(minutes=31)
    assert await close_idle_sessions(database, 30, clock=lambda: now[0]) == 1
    assert await close_idle_sessions(database, 30, clock=lambda: now[0]) == 0
    await service.handle(customer("hello"))
    assert port.texts[-1].startswith("Welcome back!")
    async with database.transaction() as s:
        rows = (
            await s.execute(
                select(Conversation.status, Conversation.close_reason).order_by(Conversation.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [("closed", "idle"), ("active", None)]


async def test_idle_conversation_not_yet_swept_is_closed_on_the_next_message(
    database: Database,
) -> None:
    now = [utcnow()]
    service = service_for(database, idle_minutes=30, clock=lambda: now[0])
    port = RecordingPort()
    service.register_channel("test", port)
    await service.handle(customer("I need a car loan"))
    now[0] += timedelta(hours=2)
    await service.handle(customer("5 lakh"))
    assert port.texts[-1].startswith("Welcome back!")
    assert await _count(database, Conversation) == 2


async def test_two_cleanups_at_once_close_each_conversation_once(
    database: Database, db_url: str
) -> None:
    from core.store.database import create_database

    service = service_for(database)
    service.register_channel("test", RecordingPort())
    for chat in range(10):
        await service.handle(customer("hi", chat=f"c{chat}"))
    later = utcnow() + timedelta(hours=1)
    other = create_database(db_url)  # a second "process": its own engine and pool
    try:
        counts = await asyncio.gather(
            close_idle_sessions(database, 30, clock=lambda: later),
            close_idle_sessions(other, 30, clock=lambda: later),
        )
    finally:
        await other.dispose()
    assert sum(counts) == 10
    assert await _count(database, Conversation, Conversation.close_reason == "idle") == 10


async def test_reset_closes_the_conversation(database: Database) -> None:
    service = service_for(database)
    port = RecordingPort()
    service.register_channel("test", port)
    await service.handle(customer("I need a home loan"))
    await service.handle(customer("/reset"))
    await service.handle(customer("hi"))
    assert "cleared" in port.texts[1]
    assert not port.texts[2].startswith("Welcome back")
    async with database.transaction() as s:
        reasons = (
            await s.scalars(select(Conversation.close_reason).order_by(Conversation.id))
        ).all()
    assert list(reasons) == ["reset", None]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/help", "Commands:"),
        ("/start", "Which loan"),
        ("/human", "loan advisor"),
        ("/frobnicate", "don't know the command /frobnicate"),
    ],
)
async def test_customer_commands(database: Database, text: str, expected: str) -> None:
    service = service_for(database)
    port = RecordingPort()
    service.register_channel("test", port)
    await service.handle(customer(text))
    assert expected in port.texts[0]


async def test_oversize_message_is_stored_whole_and_refused_politely(database: Database) -> None:
    service = service_for(database)
    port = RecordingPort()
    service.register_channel("test", port)
    huge = "loan " * 2000
    await service.handle(customer(huge))
    assert "too long" in port.texts[0]
    async with database.transaction() as s:
        stored = await s.scalar(select(Message.text).where(Message.direction == "in"))
    assert stored == huge

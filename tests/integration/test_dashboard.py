"""The dashboard's aggregates on SQLite and Postgres, over data made by the real pipeline (the
scripted agent's quotes and leads, handoffs claimed through the handoff service, a lead marked
won with the sales desk's command), each checked against a count made here in plain Python over
the rows read back."""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService
from core.dashboard import Dashboard, Period, funnel_table, mask_phone, percentile
from core.handoff import HandoffConfig, HandoffService
from core.messages import Citation, Inbound, parse_command
from core.salesdesk import SalesDesk
from core.store.database import Database
from core.store.models import Conversation, Handoff, Lead, Message
from tests.support.recording import RecordingPort

DAY = date(2026, 11, 26)
START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
_events = itertools.count(1)

QUOTE = ["hi", "I need a home loan", "25 lakh", "20 years", "my salary is 1.2 lakh a month"]
CONSENT = ["yes", "yes"]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def tick(self, minutes: float = 1) -> None:
        self.now += timedelta(minutes=minutes)


async def _knows_nothing(text: str) -> tuple[str, tuple[Citation, ...]] | None:
    """A knowledge base with nothing above its relevance floor: every question is a gap."""
    return None


@dataclass
class Seeded:
    db: Database
    clock: Clock
    service: ConversationService
    conversations: dict[str, int]


async def _say(seed: Seeded, channel: str, chat: str, texts: list[str], name: str) -> int:
    conversation_id = 0
    for text in texts:
        seed.clock.tick()
        outcome = await seed.service.handle(
            Inbound(
                channel=channel,
                chat_key=chat,
                sender_id=f"user-{chat}",
                sender_name=name,
                text=text,
                event_id=f"evt-{next(_events)}",
                command=parse_command(text),
                received_at=seed.clock.now,
            )
        )
        assert outcome is not None
        conversation_id = outcome.conversation_id
    return conversation_id


async def _handoff(seed: Seeded, conversation_id: int, requested: datetime) -> int:
    async with seed.db.transaction() as session:
        return int(
            (
                await session.execute(
                    insert(Handoff)
                    .values(
                        conversation_id=conversation_id,
                        reason="lead",
                        status="waiting",
                        requested_at=requested,
                        sla_due_at=requested + timedelta(minutes=10),
                        last_activity_at=requested,
                    )
                    .returning(Handoff.id)
                )
            ).scalar_one()
        )


@pytest.fixture
async def seeded(database: Database) -> Seeded:
    catalogue = load_catalogue()
    clock = Clock(START)
    scripted = ScriptedAgent(catalogue, knowledge=_knows_nothing)
    service = ConversationService(database, scripted, scripted, clock=clock)
    for channel in ("telegram", "web"):
        service.register_channel(channel, RecordingPort())
    seed = Seeded(database, clock, service, {})
    c = seed.conversations
    c["asha"] = await _say(
        seed, "telegram", "t1", [*QUOTE, *CONSENT, "Asha Verma", "98765 43210"], "Asha"
    )
    c["quote_only"] = await _say(seed, "telegram", "t2", QUOTE, "Ravi")
    c["meera"] = await _say(
        seed, "web", "w1", [*QUOTE, *CONSENT, "Meera Nair", "91234 56789"], "Meera"
    )
    c["hello"] = await _say(seed, "web", "w2", ["hello"], "Kiran")
    c["gaps1"] = await _say(seed, "telegram", "t3", ["Can I pay my EMI with bitcoin?"], "Dev")
    c["gaps2"] = await _say(seed, "web", "w3", ["can i pay the emi with bitcoin??"], "Sam")
    c["gaps3"] = await _say(seed, "telegram", "t4", ["What are your branch office hours?"], "Zoya")
    # The next day: outside a one-day period.
    clock.now = START + timedelta(days=1)
    c["tomorrow"] = await _say(seed, "telegram", "t5", QUOTE, "Nikhil")

    # Handoffs: Asha's claimed within its SLA by rep A, Meera's after it by rep B, the
    # quote-only one never claimed (past its SLA by the time of the report).
    handoffs = HandoffService(database, service.outbox, catalogue, HandoffConfig(), clock=clock)
    for key, rep, name, wait in (
        ("asha", "U0REPA", "Asha Rao", 4),
        ("meera", "U0REPB", "Vikram Shah", 17),
        ("quote_only", None, None, 0),
    ):
        requested = START + timedelta(minutes=30)
        handoff_id = await _handoff(seed, c[key], requested)
        if rep is not None:
            clock.now = requested + timedelta(minutes=wait)
            result = await handoffs.claim(handoff_id, rep, name)
            assert result.won
    # Rep A's lead is won, through the sales desk's own command.
    async with database.transaction() as session:
        lead_id = (
            await session.scalars(select(Lead.id).where(Lead.conversation_id == c["asha"]))
        ).one()
    await SalesDesk(database, catalogue).lead([str(lead_id), "won"], "slack:U0REPA")
    clock.now = START + timedelta(days=2)
    return seed


async def _rows(db: Database, model: type) -> list[Any]:
    async with db.transaction() as session:
        return list((await session.scalars(select(model))).all())


def _inside(at: datetime, period: Period) -> bool:
    return period.start <= at < period.end


async def _expected_funnel(db: Database, period: Period) -> dict[str, int]:
    conversations = [
        c
        for c in await _rows(db, Conversation)
        if _inside(c.started_at, period) and (period.channel in (None, c.channel))
    ]
    ids = {c.id for c in conversations}
    messages = await _rows(db, Message)
    leads = await _rows(db, Lead)
    handoffs = await _rows(db, Handoff)
    quoted = {
        m.conversation_id
        for m in messages
        if m.conversation_id in ids
        and m.direction == "out"
        and (
            m.meta.get("emi") is not None
            or m.meta.get("document") is not None
            or any(
                call.get("name") == "calculate_emi" and call.get("ok")
                for call in m.meta.get("tool_calls") or ()
            )
        )
    }
    return {
        "conversations": len(ids),
        "quotes": len(quoted),
        "leads": len(
            {lead.conversation_id for lead in leads if lead.conversation_id in ids and lead.consent}
        ),
        "claimed": len(
            {h.conversation_id for h in handoffs if h.conversation_id in ids and h.assigned_to}
        ),
        "won": len(
            {
                lead.conversation_id
                for lead in leads
                if lead.conversation_id in ids and lead.status == "won"
            }
        ),
    }


@pytest.mark.parametrize("channel", [None, "telegram", "web"])
async def test_the_funnel_matches_a_count_of_the_rows(seeded: Seeded, channel: str | None) -> None:
    period = Period.dates(DAY, DAY, channel)
    dashboard = Dashboard(seeded.db)
    try:
        steps = await dashboard.funnel(period)
    finally:
        await dashboard.close()
    expected = await _expected_funnel(seeded.db, period)
    assert {s.step: s.count for s in steps} == expected
    # Not vacuous: the seed reaches every step in the whole day.
    if channel is None:
        assert expected == {
            "conversations": 7,
            "quotes": 3,
            "leads": 2,
            "claimed": 2,
            "won": 1,
        }
    for before, step in itertools.pairwise(steps):
        assert step.conversion == (round(step.count / before.count, 4) if before.count else None)
    assert steps[0].conversion is None
    assert "conversations" in funnel_table(period, steps)


async def test_a_longer_period_takes_in_the_next_day(seeded: Seeded) -> None:
    period = Period.dates(DAY, DAY + timedelta(days=1))
    dashboard = Dashboard(seeded.db)
    try:
        steps = await dashboard.funnel(period)
    finally:
        await dashboard.close()
    assert {s.step: s.count for s in steps} == await _expected_funnel(seeded.db, period)
    assert steps[0].count == 8 and steps[1].count == 4


async def test_daily_rows_match_a_count_of_the_rows(seeded: Seeded) -> None:
    period = Period.dates(DAY, DAY + timedelta(days=1))
    dashboard = Dashboard(seeded.db)
    try:
        rows = await dashboard.daily(period)
    finally:
        await dashboard.close()
    conversations = await _rows(seeded.db, Conversation)
    messages = await _rows(seeded.db, Message)
    leads = await _rows(seeded.db, Lead)
    channel_of = {c.id: c.channel for c in conversations}
    expected: Counter[tuple[str, str, str]] = Counter()
    for c in conversations:
        if _inside(c.started_at, period):
            expected[(c.started_at.date().isoformat(), c.channel, "conversations")] += 1
    for m in messages:
        if _inside(m.created_at, period):
            expected[(m.created_at.date().isoformat(), m.channel, "messages")] += 1
    for lead in leads:
        if _inside(lead.created_at, period) and lead.consent:
            expected[
                (lead.created_at.date().isoformat(), channel_of[lead.conversation_id], "leads")
            ] += 1
    got: Counter[tuple[str, str, str]] = Counter()
    for r in rows:
        for what in ("conversations", "messages", "leads"):
            if getattr(r, what):
                got[(r.day, r.channel, what)] = getattr(r, what)
    assert got == expected
    # Every day for every channel, zeros included.
    assert len(rows) == 2 * 2
    assert expected[(DAY.isoformat(), "telegram", "leads")] == 1


async def test_handoff_figures_match_the_rows(seeded: Seeded) -> None:
    period = Period.dates(DAY, DAY)
    dashboard = Dashboard(seeded.db, clock=seeded.clock)
    try:
        figures = await dashboard.handoffs(period)
    finally:
        await dashboard.close()
    handoffs = [h for h in await _rows(seeded.db, Handoff) if _inside(h.requested_at, period)]
    waits = [(h.claimed_at - h.requested_at).total_seconds() / 60 for h in handoffs if h.claimed_at]
    assert figures.median_minutes_to_claim == round(statistics.median(waits), 2)
    p90 = statistics.quantiles(waits, n=10, method="inclusive")[-1]
    assert figures.p90_minutes_to_claim == round(p90, 2)
    breaches = sum((h.claimed_at or seeded.clock.now) > h.sla_due_at for h in handoffs)
    assert figures.sla_breaches == breaches == 2
    won = {lead.conversation_id for lead in await _rows(seeded.db, Lead) if lead.status == "won"}
    reps = Counter(h.assigned_to for h in handoffs if h.assigned_to)
    wins = Counter(h.assigned_to for h in handoffs if h.assigned_to and h.conversation_id in won)
    assert [(r.rep, r.claims, r.wins) for r in figures.reps] == sorted(
        ((rep, n, wins[rep]) for rep, n in reps.items()), key=lambda t: (-t[1], t[0])
    )
    assert {r.rep: r.name for r in figures.reps} == {"U0REPA": "Asha Rao", "U0REPB": "Vikram Shah"}


async def test_llm_figures_match_the_replies(seeded: Seeded) -> None:
    # The scripted agent reports no tokens; a few LLM replies as the LLM agent stores them
    # (its meta: tokens, fallback, breaker), including a breaker that opens twice.
    conversation_id = seeded.conversations["hello"]
    at = START + timedelta(hours=3)
    metas = [
        {"prompt_tokens": 900, "completion_tokens": 120, "fallback": False, "breaker": "closed"},
        {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "fallback": True,
            "fallback_reason": "timeout",
            "breaker": "open",
        },
        {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "fallback": True,
            "fallback_reason": "circuit_open",
            "breaker": "open",
        },
        {"prompt_tokens": 1000, "completion_tokens": 80, "fallback": False, "breaker": "closed"},
        {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "fallback": True,
            "fallback_reason": "rate_limited",
            "breaker": "open",
        },
    ]
    async with seeded.db.transaction() as session:
        for i, meta in enumerate(metas):
            await session.execute(
                insert(Message).values(
                    conversation_id=conversation_id,
                    channel="web",
                    direction="out",
                    author="bot",
                    text="reply",
                    status="sent",
                    created_at=at + timedelta(minutes=i),
                    meta={**meta, "model": "stand-in", "latency_ms": 100.0 * (i + 1)},
                )
            )
    period = Period.dates(DAY, DAY)
    dashboard = Dashboard(seeded.db, price_per_million_tokens=Decimal("0.59"))
    try:
        figures = await dashboard.llm(period)
    finally:
        await dashboard.close()
    replies = [
        m
        for m in await _rows(seeded.db, Message)
        if m.direction == "out" and m.author == "bot" and _inside(m.created_at, period)
    ]
    prompt = sum(int(m.meta.get("prompt_tokens") or 0) for m in replies)
    completion = sum(int(m.meta.get("completion_tokens") or 0) for m in replies)
    assert (figures.prompt_tokens, figures.completion_tokens) == (prompt, completion) == (1900, 200)
    assert figures.estimated_cost == (Decimal(2100) * Decimal("0.59") / 10**6).quantize(
        Decimal("0.0001")
    )
    turns = [m for m in replies if "fallback" in m.meta]
    assert figures.turns == len(turns) == 5
    assert figures.fallback_rate == round(sum(m.meta["fallback"] for m in turns) / 5, 4)
    assert figures.breaker_openings == 2
    latencies = sorted(float(m.meta["latency_ms"]) for m in replies if "latency_ms" in m.meta)
    assert len(latencies) > 5  # the scripted replies' latencies count too
    assert figures.latency_p50 == round(statistics.median(latencies), 2)
    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[-1]
    assert figures.latency_p95 == round(p95, 2)


async def test_knowledge_gaps_are_grouped_most_frequent_first(seeded: Seeded) -> None:
    period = Period.dates(DAY, DAY)
    dashboard = Dashboard(seeded.db)
    try:
        groups = await dashboard.gaps(period)
        web_only = await dashboard.gaps(Period.dates(DAY, DAY, "web"))
    finally:
        await dashboard.close()
    messages = await _rows(seeded.db, Message)
    by_id = {m.id: m for m in messages}
    unknown = [
        m
        for m in messages
        if m.direction == "out" and m.meta.get("citations") == [] and _inside(m.created_at, period)
    ]
    questions = [by_id[m.reply_to_id].text for m in unknown]
    assert sum(g.count for g in groups) == len(questions) == 3
    assert [g.count for g in groups] == [2, 1]
    bitcoin = groups[0]
    assert "bitcoin" in bitcoin.question.lower()
    assert bitcoin.example_conversation in {
        seeded.conversations["gaps1"],
        seeded.conversations["gaps2"],
    }
    assert "office hours" in groups[1].question
    assert [g.count for g in web_only] == [1]


async def test_search_and_transcript(seeded: Seeded) -> None:
    dashboard = Dashboard(seeded.db)
    try:
        by_name = await dashboard.search("asha verma")
        by_phone = await dashboard.search("98765 43210")
        by_user = await dashboard.search("kiran")
        nobody = await dashboard.search("nobody-at-all")
        transcript = await dashboard.transcript(seeded.conversations["asha"])
        missing = await dashboard.transcript(10**9)
    finally:
        await dashboard.close()
    assert [h.id for h in by_name] == [seeded.conversations["asha"]]
    assert [h.id for h in by_phone] == [seeded.conversations["asha"]]
    assert by_name[0].phone == "+919876543210" and by_name[0].customer == "Asha Verma"
    assert [h.id for h in by_user] == [seeded.conversations["hello"]]
    assert nobody == [] and missing is None
    assert transcript is not None
    assert mask_phone(transcript.phone) == "+91 98xxxxx210"
    stored = [m for m in await _rows(seeded.db, Message) if m.conversation_id == transcript.id]
    assert [line.text for line in transcript.messages] == [
        m.text for m in sorted(stored, key=lambda m: m.id)
    ]
    assert {line.direction for line in transcript.messages} == {"in", "out"}
    # The claim's notice to the customer came after the claim: part of the handoff.
    assert transcript.messages[-1].handoff
    assert not transcript.messages[0].handoff


def test_percentile_and_masking() -> None:
    assert percentile([], 0.5) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.9) == 5.0
    assert mask_phone("+919876543210") == "+91 98xxxxx210"
    assert mask_phone("9876543210") == "98xxxxx210"
    assert mask_phone(None) is None


async def test_esoteric_report_prints_the_funnel(seeded: Seeded, tmp_path: Path) -> None:
    url = seeded.db.engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "DATABASE_URL": url, "ESOTERIC_DATA_DIR": str(tmp_path / "data")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "report",
        "--days",
        "366",
        "--channel",
        "telegram",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].endswith("(telegram)")
    period = Period.days_back(366, "telegram")
    expected = await _expected_funnel(seeded.db, period)
    table = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert {step: int(cells[0]) for step, cells in table.items()} == expected
    assert table["quotes"][1] == f"{expected['quotes'] / expected['conversations'] * 100:.1f}%"


async def test_the_llms_emi_tool_is_a_quote(seeded: Seeded) -> None:
    """A reply made with a successful calculate_emi call (as the LLM agent stores it) counts as
    a quote; a failed call does not."""
    async with seeded.db.transaction() as session:
        for key, ok in (("hello", True), ("gaps3", False)):
            await session.execute(
                insert(Message).values(
                    conversation_id=seeded.conversations[key],
                    channel="web" if key == "hello" else "telegram",
                    direction="out",
                    author="bot",
                    text="Your EMI would be about ...",
                    status="sent",
                    created_at=START + timedelta(hours=4),
                    meta={
                        "model": "stand-in",
                        "fallback": False,
                        "tool_calls": [{"name": "calculate_emi", "ok": ok, "ms": 0.4}],
                    },
                )
            )
    period = Period.dates(DAY, DAY)
    dashboard = Dashboard(seeded.db)
    try:
        steps = await dashboard.funnel(period)
    finally:
        await dashboard.close()
    expected = await _expected_funnel(seeded.db, period)
    assert {s.step: s.count for s in steps} == expected
    assert expected["quotes"] == 4

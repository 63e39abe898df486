"""The sales desk commands and the sales persona, without any channel."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.agent.base import LeadDraft, TurnContext
from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.loan import emi
from core.messages import Citation
from core.money import format_money
from core.salesdesk import (
    CATALOGUE_SOURCE,
    DeskInputError,
    SalesDesk,
    parse_emi_args,
)
from core.store import repository as repo
from core.store.database import Database
from core.store.models import Conversation

CATALOGUE = load_catalogue()
_chats = itertools.count(1)
NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


async def insert_lead(
    db: Database, draft: LeadDraft, at: datetime, channel: str = "telegram"
) -> int:
    """A lead as the customer flow stores one: attached to its conversation."""
    async with db.transaction() as session:
        chat = f"chat-{next(_chats)}"
        conversation = Conversation(channel=channel, chat_key=chat, state={}, last_activity_at=at)
        session.add(conversation)
        await session.flush()
        lead = repo.add_lead(session, draft, conversation.id, None, at)
        await session.flush()
        return lead.id


def test_parse_emi_args() -> None:
    assert parse_emi_args(["500000", "10.5", "60"]).months == 60
    request = parse_emi_args(["25", "lakh", "8.5%", "20y"])
    assert (request.amount, request.annual_rate, request.months) == (
        Decimal(2_500_000),
        Decimal("8.5"),
        240,
    )
    for bad in (
        ["1"],
        ["-5", "10", "12"],
        ["5L", "x", "12"],
        ["5L", "10", "0"],
        ["5L", "99", "12"],
    ):
        with pytest.raises(DeskInputError):
            parse_emi_args(bad)


async def test_emi_matches_the_loan_module(sqlite_database: Database) -> None:
    desk = SalesDesk(sqlite_database, CATALOGUE)
    reply = await desk.run("emi 500000 10.5 60", "slack:U1")
    assert format_money(emi(500000, "10.5", 60), "INR", paise=True) in reply.text


async def test_product_cites_the_catalogue(sqlite_database: Database) -> None:
    reply = await SalesDesk(sqlite_database, CATALOGUE).run("product housing", "slack:U1")
    assert reply.text.startswith("**Home Loan**")
    assert [c.source for c in reply.citations] == [CATALOGUE_SOURCE]


async def test_leads_today_counts_only_today(sqlite_database: Database) -> None:
    draft = LeadDraft(
        "car", Decimal(800000), 60, Decimal(70000), None, None, "Meera", "9876543210", True
    )
    await insert_lead(sqlite_database, draft, NOON - timedelta(days=1))
    await insert_lead(sqlite_database, draft, NOON - timedelta(hours=1))
    reply = await SalesDesk(sqlite_database, CATALOGUE, clock=lambda: NOON).run(
        "leads today", "slack:U1"
    )
    assert "**1 lead today** (2026-11-26 UTC)" in reply.text
    assert "Car Loan" in reply.text and "Meera" in reply.text


async def test_lead_card_offers_the_other_statuses(sqlite_database: Database) -> None:
    draft = LeadDraft("home", None, None, None, None, None, "Meera", "9876543210", True)
    lead_id = await insert_lead(sqlite_database, draft, NOON)
    desk = SalesDesk(sqlite_database, CATALOGUE, clock=lambda: NOON)
    card = await desk.run(f"lead {lead_id} won", "slack:U1")
    assert "marked won (was new)" in card.text
    assert [c.value for c in card.choices] == [
        f"/esoteric lead {lead_id} contacted",
        f"/esoteric lead {lead_id} lost",
    ]
    assert "Usage" in (await desk.run("lead", "slack:U1")).text
    assert "Usage" in (await desk.run("leads yesterday", "slack:U1")).text


def _ctx(text: str, persona: str) -> TurnContext:
    return TurnContext(conversation_id=1, channel="slack", text=text, state={}, persona=persona)


async def test_sales_persona_is_terse_cited_and_distinct_from_the_customer_one() -> None:
    agent = ScriptedAgent(CATALOGUE)
    sales = await agent.respond(_ctx("car loan foreclosure?", "sales"))
    customer = await agent.respond(_ctx("car loan foreclosure?", "customer"))
    assert sales.reply.text != customer.reply.text
    assert "Car Loan" in sales.reply.text and "foreclosure charge" in sales.reply.text
    assert sales.reply.text.startswith(f"**Car Loan** (from {CATALOGUE_SOURCE})")
    assert [c.source for c in sales.reply.citations] == [CATALOGUE_SOURCE]
    assert sales.state == {}  # no customer quote flow started
    assert customer.state.get("product") == "car"


async def test_sales_persona_adds_knowledge_base_citations() -> None:
    async def lookup(text: str) -> tuple[str, tuple[Citation, ...]] | None:
        # A knowledge base holding one passage about documents.
        if "document" in text:
            return "Salary slips for 3 months.", (Citation("home-loan.md", "Documents"),)
        return None

    agent = ScriptedAgent(CATALOGUE, knowledge=lookup)
    reply = (await agent.respond(_ctx("documents for a home loan?", "sales"))).reply
    assert "Salary slips for 3 months." in reply.text
    assert [c.source for c in reply.citations] == [CATALOGUE_SOURCE, "home-loan.md"]
    unknown = (await agent.respond(_ctx("what's the weather", "sales"))).reply
    assert "nothing on that" in unknown.text and not unknown.citations


async def test_sales_persona_computes_emi_from_free_text() -> None:
    agent = ScriptedAgent(CATALOGUE)
    reply = (await agent.respond(_ctx("EMI 12 lakh 9.25 84", "sales"))).reply
    assert format_money(emi(1_200_000, "9.25", 84), "INR", paise=True) in reply.text

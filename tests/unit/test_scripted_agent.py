"""The offline scripted agent on its own: slot filling, validation, re-asking, the lead."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.agent.base import AgentResult, TurnContext
from core.agent.scripted import ScriptedAgent, ScriptedAgentConfig
from core.catalogue import load_catalogue
from core.loan import emi
from core.money import format_money

CATALOGUE = load_catalogue()


class Chat:
    """Feeds messages through the agent, carrying its state like the service does."""

    def __init__(self, agent: ScriptedAgent | None = None) -> None:
        self.agent = agent or ScriptedAgent(CATALOGUE)
        self.state: dict[str, Any] = {}
        self.last: AgentResult | None = None

    async def say(self, text: str, contact: str | None = None) -> str:
        ctx = TurnContext(
            conversation_id=1, channel="test", text=text, state=self.state, contact_phone=contact
        )
        self.last = await self.agent.respond(ctx)
        self.state = self.last.state
        return self.last.reply.text


async def test_greeting_offers_every_product() -> None:
    chat = Chat()
    reply = await chat.say("hello")
    assert "Which loan" in reply
    assert chat.last is not None
    assert [c.label for c in chat.last.reply.choices] == [
        p.name for p in CATALOGUE.products.values()
    ]


async def test_all_slots_in_one_message() -> None:
    chat = Chat()
    reply = await chat.say("I want a car loan of 8 lakh for 5 years")
    assert "monthly income" in reply
    reply = await chat.say("70k per month")
    car = CATALOGUE.get("car")
    assert f"EMI: {format_money(emi(800_000, car.annual_rate, 60))}" in reply


@pytest.mark.parametrize(
    ("stage_inputs", "bad", "expected"),
    [
        (["I need a home loan"], "a lot", "couldn't read an amount"),
        (["I need a home loan"], "1 lakh", "ranges from ₹5,00,000"),
        (["I need a personal loan", "3 lakh"], "forever", "couldn't read a tenure"),
        (["I need a personal loan", "3 lakh"], "10 years", "outside that"),
        (["I need a personal loan", "3 lakh", "3 years"], "decent", "couldn't read your income"),
    ],
)
async def test_reasks_what_it_cannot_use(stage_inputs: list[str], bad: str, expected: str) -> None:
    chat = Chat()
    for text in stage_inputs:
        await chat.say(text)
    stage = chat.state["stage"]
    assert expected in await chat.say(bad)
    assert chat.state["stage"] == stage  # still waiting for the same answer


async def test_existing_emis_reduce_eligibility() -> None:
    chat = Chat()
    for text in ["I need a home loan", "40 lakh", "20 years"]:
        await chat.say(text)
    reply = await chat.say("salary 80k, existing emi 20000")
    assert "may be difficult" in reply and "existing EMIs of ₹20,000" in reply
    assert chat.state["eligible"] is False
    assert "not an approval" in reply


async def test_never_promises_approval() -> None:
    chat = Chat()
    for text in ["business loan", "10 lakh", "3 years", "2 lakh a month"]:
        reply = await chat.say(text)
    lowered = reply.lower()
    assert "approved" not in lowered and "guarantee" not in lowered
    assert "not an approval" in lowered


async def test_lead_needs_explicit_consent_and_a_valid_phone() -> None:
    chat = Chat()
    for text in ["education loan", "5 lakh", "5 years", "40000"]:
        await chat.say(text)
    assert "consent" not in chat.state
    await chat.say("yes")  # wants an advisor
    assert "Please answer yes or no" in await chat.say("hmm")  # asked again
    await chat.say("yes")
    await chat.say("my name is ravi kumar")
    assert "valid Indian mobile" in await chat.say("12345")
    reply = await chat.say("call me on 9876543210")
    assert chat.last is not None and chat.last.lead is not None
    lead = chat.last.lead
    assert (lead.name, lead.phone, lead.consent) == ("Ravi Kumar", "+919876543210", True)
    assert (lead.product, lead.amount, lead.tenure_months) == ("education", Decimal(500000), 60)
    assert "+919876543210" in reply


async def test_declined_consent_stores_nothing() -> None:
    chat = Chat()
    for text in ["personal loan", "2 lakh", "2 years", "50000", "yes"]:
        await chat.say(text)
    reply = await chat.say("no")
    assert "won't store" in reply
    assert chat.last is not None and chat.last.lead is None


async def test_shared_contact_fills_the_phone() -> None:
    chat = Chat()
    await chat.say("I want to talk to an advisor")
    await chat.say("yes")
    await chat.say("Meera")
    await chat.say("", contact="+91 91234 56789")
    assert chat.last is not None and chat.last.lead is not None
    assert chat.last.lead.phone == "+919123456789"


async def test_currency_is_configurable() -> None:
    chat = Chat(ScriptedAgent(CATALOGUE, ScriptedAgentConfig(currency="USD")))
    for text in ["car loan", "5 lakh", "3 years"]:
        await chat.say(text)
    reply = await chat.say("60000")
    assert "$500,000" in reply and "₹" not in reply

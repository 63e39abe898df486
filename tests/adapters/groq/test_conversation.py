"""A whole customer conversation through the LLM path: the EMI tool gives the numbers, the
knowledge base gives cited answers, and the lead is captured with consent. Checked in SQL."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from bot.runtime import open_runtime
from bot.settings import load_settings
from core.agent.llm import LLMAgent
from core.loan import emi
from core.store.database import Database
from core.store.models import Conversation, Lead, Message
from tests.adapters.groq.conftest import API_KEY, StreamingChannel, say, service
from tests.support import groq_server as g


def _alias(request: g.Recorded, heading: str) -> str:
    system = "\n".join(m["content"] for m in request.messages if m["role"] == "system")
    match = re.search(rf'<reference id="(R\d+)"[^>]*heading="{re.escape(heading)}"', system)
    assert match, f"no reference for {heading!r} in the prompt"
    return match.group(1)


async def test_customer_gets_a_quote_and_becomes_a_lead(
    database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    def model(request: g.Recorded) -> g.Step | None:
        """Plays the model: decides from what it was sent, as a model would."""
        last = request.messages[-1]
        results = request.tool_results
        if last["role"] == "user" and "25 lakh" in last["content"]:
            return g.tool_calls(
                ("calculate_emi", {"product": "home", "amount": 2500000, "tenure_months": 240})
            )
        if last["role"] == "tool" and "emi" in results[-1] and "tenure_months" in results[-1]:
            docs = _alias(request, "Home Loan > Documents required")
            r = results[-1]
            return g.text(
                f"For {r['amount']} over 20 years at {r['annual_rate_percent']}% the EMI is "
                f"**{r['emi']}** a month. You'll need PAN, Aadhaar, salary slips and bank "
                f"statements [{docs}]. What is your monthly take-home income?"
            )
        if last["role"] == "user" and "90,000" in last["content"]:
            return g.tool_calls(
                (
                    "check_eligibility",
                    {
                        "product": "home",
                        "amount": 2500000,
                        "tenure_months": 240,
                        "monthly_income": 90000,
                    },
                )
            )
        if last["role"] == "tool" and "eligible_on_first_check" in results[-1]:
            r = results[-1]
            return g.text(
                f"The EMI of {r['emi']} is {r['emi_share_of_income_percent']}% of your income, "
                "so you look eligible on this first check. Would you like an advisor to call "
                "you? If so, may Esoteric store your name and phone number so an advisor can "
                "contact you?"
            )
        if last["role"] == "user" and "98765" in last["content"]:
            return g.tool_calls(
                (
                    "capture_lead",
                    {
                        "name": "Asha Rao",
                        "phone": "98765 43210",
                        "consent": True,
                        "product": "home",
                    },
                )
            )
        if last["role"] == "tool" and results[-1].get("captured"):
            return g.text(
                f"Thank you, Asha Rao. An advisor will call you on {results[-1]['phone']}."
            )
        return None

    groq_server.on_request = model
    channel = StreamingChannel()
    svc = service(database, make_agent(), channel)

    await svc.handle(say("I want a home loan of 25 lakh for 20 years. Which documents needed?"))
    await svc.handle(say("My take-home is 90,000 a month"))
    await svc.handle(say("Yes, I agree. I'm Asha Rao, 98765 43210"))

    # The EMI the customer saw came from the tool, which computed it with core.loan.
    expected_emi = emi(2500000, "8.50", 240)
    emi_result = groq_server.requests[1].tool_results[-1]
    assert emi_result["emi_exact"] == str(expected_emi)
    assert "**₹21,696** a month" in channel.finals[0].text
    assert "[R" not in channel.finals[0].text

    async with database.transaction() as session:
        lead = (await session.scalars(select(Lead))).one()
        conversation = (await session.scalars(select(Conversation))).one()
        replies = list(
            (
                await session.scalars(
                    select(Message).where(Message.direction == "out").order_by(Message.id)
                )
            ).all()
        )
    assert lead.conversation_id == conversation.id
    assert (lead.product, lead.name, lead.phone) == ("home", "Asha Rao", "+919876543210")
    assert lead.amount == Decimal("2500000.00") and lead.tenure_months == 240
    assert lead.monthly_income == Decimal("90000.00")
    assert lead.emi == expected_emi and lead.eligible is True
    assert lead.consent is True and lead.consent_at is not None

    first, second, third = replies
    [citation] = first.meta["citations"]
    assert citation["source"] == "home-loan.md"
    assert citation["heading"] == "Home Loan > Documents required"
    assert citation["chunk_id"]
    assert [c["name"] for c in first.meta["tool_calls"]] == ["calculate_emi"]
    assert [c["name"] for c in second.meta["tool_calls"]] == ["check_eligibility"]
    assert third.meta["lead_id"] == lead.id
    assert [c["name"] for c in third.meta["tool_calls"]] == ["capture_lead"]
    assert all(r.meta["fallback"] is False for r in replies)
    assert "ungrounded_figures" not in first.meta and "ungrounded_figures" not in second.meta
    # The tools kept the scripted agent's slots in step, so a fallback could carry on.
    assert conversation.state["product"] == "home" and conversation.state["stage"] == "done"
    assert conversation.state["emi"] == str(expected_emi)


async def test_lead_without_consent_is_refused_to_the_model(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(
        g.tool_calls(
            (
                "capture_lead",
                {"name": "Asha", "phone": "9876543210", "consent": True, "product": "home"},
            )
        ),
        g.text("Before I pass this on: may Esoteric store your name and number?"),
    )
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(), channel)

    await svc.handle(say("I'm Asha, 9876543210, home loan please"))

    [result] = groq_server.requests[1].tool_results
    assert "consent missing" in result["error"]
    async with sqlite_database.transaction() as session:
        assert (await session.scalars(select(Lead))).first() is None


async def test_runtime_chooses_the_llm_agent_with_a_key_and_closes_its_client(
    tmp_path: Any, groq_server: g.GroqStandIn
) -> None:
    groq_server.script(g.text("Hello from Groq."))
    settings = load_settings(
        GROQ_API_KEY=API_KEY, GROQ_BASE_URL=groq_server.base_url, data_dir=tmp_path / "data"
    )
    async with open_runtime(settings, scheduler=False) as runtime:
        agent = runtime.service.agent
        assert isinstance(agent, LLMAgent)
        assert agent.fallback is runtime.scripted
        channel = StreamingChannel()
        runtime.service.register_channel("test", channel)
        await runtime.service.handle(say("hi"))
        assert channel.finals[0].text == "Hello from Groq."
    assert agent.client.is_closed()
    assert groq_server.requests[0].body["model"] == settings.llm_model
    assert json.loads(json.dumps(groq_server.requests[0].body["tools"]))


async def test_runtime_without_a_key_uses_the_scripted_agent(tmp_path: Any) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    async with open_runtime(settings, scheduler=False) as runtime:
        assert runtime.service.agent is runtime.scripted

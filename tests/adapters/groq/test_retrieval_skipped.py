"""Retrieval only for messages a document could answer: a slot answer, a yes or a greeting
costs no embedding and no search (the model can still search with its tool)."""

from __future__ import annotations

from typing import Any

import pytest

from core.knowledge.query import needs_retrieval
from core.store.database import Database
from tests.adapters.groq.conftest import StreamingChannel, say, service
from tests.support import groq_server as g
from tests.support.keyword_knowledge import KeywordKnowledge


@pytest.mark.parametrize(
    "text",
    ["25 lakh", "20 years", "yes", "No.", "my salary is 1.2 lakh", "9876543210", "hi",
     "Hello!", "₹25,00,000", "about 50 lakh", "30 saal", "ok thanks"],
)  # fmt: skip
def test_slot_answers_and_greetings_need_no_retrieval(text: str) -> None:
    assert not needs_retrieval(text)


@pytest.mark.parametrize(
    "text",
    ["What documents do I need?", "interest rate?", "home loan", "kitna byaj lagega",
     "can I prepay my car loan early without a penalty"],
)  # fmt: skip
def test_questions_are_looked_up(text: str) -> None:
    assert needs_retrieval(text)


async def test_a_slot_answer_turn_makes_no_search(
    sqlite_database: Database,
    groq_server: g.GroqStandIn,
    make_agent: Any,
    knowledge: KeywordKnowledge,
) -> None:
    groq_server.default = g.text("Noted.")
    svc = service(sqlite_database, make_agent(), StreamingChannel())
    await svc.handle(say("Which documents do I need for a home loan?"))
    await svc.handle(say("25 lakh"))
    await svc.handle(say("yes"))
    assert knowledge.queries == ["Which documents do I need for a home loan?"]

"""Streaming through the real groq SDK: deltas reach the channel, the final text is stored once,
and the turn's figures are recorded."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.store.database import Database
from core.store.models import Conversation, Message
from tests.adapters.groq.conftest import API_KEY, StreamingChannel, say, service
from tests.support import groq_server as g
from tests.support.recording import RecordingPort


async def _outbound(db: Database) -> list[Message]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(Message).where(Message.direction == "out").order_by(Message.id)
        )
        return list(rows.all())


async def test_reply_streams_to_the_channel_and_is_persisted_once(
    database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(
        g.text(
            "A home loan needs PAN, Aadhaar and salary slips [R1]. Property papers come later.",
            prompt_tokens=321,
        )
    )
    channel = StreamingChannel()
    svc = service(database, make_agent(llm_model="llama-3.1-8b-instant"), channel)

    outcome = await svc.handle(say("Which documents do I need for a home loan?"))

    assert outcome is not None and outcome.reply is not None
    # The channel saw the first sentence once it was whole and checked (its citation marker
    # gone), then settled on the final text.
    assert "".join(channel.deltas[0]) == "A home loan needs PAN, Aadhaar and salary slips."
    final = channel.finals[0]
    assert final.text == (
        "A home loan needs PAN, Aadhaar and salary slips. Property papers come later."
    )
    assert [c.source for c in final.citations] == ["home-loan.md"]
    assert channel.sent == []

    rows = await _outbound(database)
    assert len(rows) == 1
    out = rows[0]
    assert out.text == final.text
    assert out.status == "sent"
    meta = out.meta
    assert meta["model"] == "llama-3.1-8b-instant"
    assert meta["prompt_tokens"] == 321 and meta["completion_tokens"] == 30
    assert meta["ttft_ms"] is not None and meta["ttft_ms"] >= 0
    assert meta["fallback"] is False and meta["streamed"] is True
    assert meta["tool_calls"] == []
    assert meta["citations"][0]["heading"] == "Home Loan > Documents required"
    assert "latency_ms" in meta

    # What the SDK sent: the configured model at Groq's path, authenticated, streamed, with the
    # tools, and the retrieved chunk marked as untrusted reference text with its id.
    [request] = groq_server.requests
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    body = request.body
    assert body["model"] == "llama-3.1-8b-instant" and body["stream"] is True
    assert {t["function"]["name"] for t in body["tools"]} == {
        "calculate_emi",
        "check_eligibility",
        "amortisation_summary",
        "lookup_product",
        "search_knowledge",
        "capture_lead",
        "request_human",
    }
    system = "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")
    assert "AI loan assistant" in system and "Never promise" in system
    assert '<reference id="R1"' in system and "untrusted" in system
    assert body["messages"][-1] == {
        "role": "user",
        "content": "Which documents do I need for a home loan?",
    }


async def test_channel_without_streaming_gets_one_whole_reply(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.text("Hello! I'm Esoteric, an AI loan assistant."))
    port = RecordingPort()
    svc = service(sqlite_database, make_agent(), port)

    await svc.handle(say("hi"))

    assert port.texts == ["Hello! I'm Esoteric, an AI loan assistant."]
    # Without a streaming channel the agent asks for a whole JSON completion.
    assert groq_server.requests[0].body["stream"] is False
    [out] = await _outbound(sqlite_database)
    assert out.meta["fallback"] is False and "streamed" not in out.meta


async def test_rolling_summary_of_turns_outside_the_history_window_is_stored(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    long = "I am comparing lenders for a flat in Pune and want to understand every charge. " * 4
    groq_server.script(*[g.text(f"Noted, point {i}.") for i in range(6)])
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(llm_history_tokens=200), channel)

    for i in range(6):
        await svc.handle(say(f"(message {i}) {long}"))

    async with sqlite_database.transaction() as session:
        conversation = (await session.scalars(select(Conversation))).one()
    summary = conversation.summary or ""
    # The oldest turns fell out of the 200-token window and were folded into the summary once.
    assert summary.count("(message 0)") == 1
    assert "Esoteric: Noted, point 0." in summary
    assert "summary_mark" in conversation.state
    last = groq_server.requests[-1].messages
    fenced = [m["content"] for m in last if m["content"].startswith("<customer_context>")]
    history_texts = [
        m["content"]
        for m in last
        if m["role"] in ("user", "assistant") and m["content"] not in fenced
    ]
    assert not any("(message 0)" in t for t in history_texts)
    # The summary quotes the customer: it reaches the model fenced, in the user role, never as
    # an instruction.
    assert not any(
        "Summary of earlier turns" in m["content"] for m in last if m["role"] == "system"
    )
    [context] = [m for m in last if m["content"] in fenced]
    assert context["role"] == "user" and "Summary of earlier turns" in context["content"]
    assert "(message 0)" in context["content"]

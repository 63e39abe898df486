"""Every way the Groq API fails, through the real SDK: the turn is retried within its deadline
or answered by the scripted agent from the same state, and the customer sees one reply."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.store.database import Database
from core.store.models import Message
from tests.adapters.groq.conftest import FAST, StreamingChannel, say, service
from tests.support import groq_server as g

SCRIPTED_GREETING = "I'm Esoteric, an AI loan assistant"


async def _replies(db: Database) -> list[Message]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(Message).where(Message.direction == "out").order_by(Message.id)
        )
        return list(rows.all())


async def test_429_is_retried_after_retry_after(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.rate_limited("0.05"), g.text("Hello from the model."))
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(), channel)

    await svc.handle(say("hi"))

    assert len(groq_server.requests) == 2
    # The SDK's own retries are off: the agent decides, so the deadline bounds every wait.
    assert groq_server.requests[1].at - groq_server.requests[0].at >= 0.05
    assert channel.finals[0].text == "Hello from the model."
    [out] = await _replies(sqlite_database)
    assert out.meta["fallback"] is False and out.meta["llm_retries"] == 1


async def test_429_asking_to_wait_past_the_deadline_falls_back_at_once(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.rate_limited("6"))
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(), channel)

    await svc.handle(say("hi"))

    assert len(groq_server.requests) == 1
    assert SCRIPTED_GREETING in channel.finals[0].text
    [out] = await _replies(sqlite_database)
    assert out.meta["fallback"] is True and out.meta["fallback_reason"] == "rate_limited"


async def test_500_is_retried_with_backoff(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.server_error(), g.server_error(), g.text("Back on my feet."))
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(llm_max_retries=2), channel)

    await svc.handle(say("hi"))

    assert len(groq_server.requests) == 3
    assert channel.finals[0].text == "Back on my feet."


async def test_slow_response_times_out_and_the_scripted_agent_answers(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.text("too late", delay=0.6))
    channel = StreamingChannel()
    svc = service(
        sqlite_database,
        make_agent(llm_request_timeout_seconds=0.2, llm_max_retries=0),
        channel,
    )

    await svc.handle(say("hi"))

    assert SCRIPTED_GREETING in channel.finals[0].text
    [out] = await _replies(sqlite_database)
    assert out.meta["fallback_reason"] == "timeout"
    assert out.text == channel.finals[0].text


async def test_stream_stalling_past_the_turn_deadline_falls_back(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    # Each frame comes within the read timeout, but the whole reply would take far too long.
    groq_server.script(g.text("Here is one more sentence. " * 20, token_delay=0.1))
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(llm_turn_deadline_seconds=1.0), channel)

    await svc.handle(say("hi"))

    # The first sentences were checked and shown before the deadline.
    assert "".join(channel.deltas[0]).startswith("Here is one more sentence.")
    assert SCRIPTED_GREETING in channel.finals[0].text
    [out] = await _replies(sqlite_database)
    assert out.meta["fallback_reason"] == "timeout"


async def test_truncated_stream_is_replaced_by_one_coherent_reply(
    database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.truncated("Your EMI would be"))
    channel = StreamingChannel()
    svc = service(database, make_agent(), channel)

    await svc.handle(say("hi"))

    # Half a sentence is never shown: the hold-back waits for its end.
    assert channel.deltas[0] == []
    final = channel.finals[0].text
    assert SCRIPTED_GREETING in final and "Your EMI would be" not in final
    [out] = await _replies(database)
    assert out.text == final
    assert out.meta["fallback"] is True and out.meta["fallback_reason"] == "connection"
    # Text had already gone out, so the request was not repeated.
    assert len(groq_server.requests) == 1


async def test_error_frame_mid_stream_falls_back(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.midstream_error("Let me check"))
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(), channel)

    await svc.handle(say("hi"))

    assert channel.deltas[0] == []  # half a sentence is never shown
    assert SCRIPTED_GREETING in channel.finals[0].text
    [out] = await _replies(sqlite_database)
    assert out.meta["fallback_reason"] == "stream_error"
    assert len(groq_server.requests) == 1


async def test_tool_use_failed_is_resampled_once(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.tool_use_failed(), g.text("Sure, which loan?"))
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(), channel)

    await svc.handle(say("hi"))

    assert channel.finals[0].text == "Sure, which loan?"
    assert len(groq_server.requests) == 2


async def test_repeated_tool_use_failed_falls_back(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.tool_use_failed(), g.tool_use_failed(), g.text("never used"))
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(), channel)

    await svc.handle(say("hi"))

    assert SCRIPTED_GREETING in channel.finals[0].text
    [out] = await _replies(sqlite_database)
    assert out.meta["fallback_reason"] == "tool_use_failed"
    assert len(groq_server.requests) == 2


async def test_invalid_key_opens_the_breaker_at_once(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.unauthorized(), g.text("never used"))
    channel = StreamingChannel()
    svc = service(sqlite_database, make_agent(), channel)

    await svc.handle(say("hi"))
    await svc.handle(say("I need a home loan"))

    assert len(groq_server.requests) == 1
    first, second = await _replies(sqlite_database)
    assert first.meta["fallback_reason"] == "auth"
    assert second.meta["fallback_reason"] == "circuit_open"
    assert "Home Loan" in second.text  # the scripted agent carried the conversation on


async def test_breaker_opens_after_repeated_failures_and_closes_after_a_good_trial(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    channel = StreamingChannel()
    agent = make_agent(llm_max_retries=0, llm_breaker_failures=2, llm_breaker_cooldown_seconds=60)
    svc = service(sqlite_database, agent, channel)

    for text in ("hi", "home loan", "25 lakh"):
        await svc.handle(say(text))
    assert len(groq_server.requests) == 2  # the third turn did not reach the API
    assert agent.breaker.state == "open"

    # After the cool-down one trial call goes out; it succeeds, so the breaker closes.
    agent.breaker.config = type(agent.breaker.config)(2, 0.0)
    groq_server.script(g.text("Great, 20 years it is."))
    await svc.handle(say("20 years"))
    assert len(groq_server.requests) == 3
    assert agent.breaker.state == "closed"
    assert channel.finals[-1].text == "Great, 20 years it is."


async def test_every_call_failing_still_answers_every_turn_within_the_deadline(
    database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    """With the API down for good, the scripted agent answers the whole quote conversation."""
    deadline = FAST["llm_turn_deadline_seconds"]
    channel = StreamingChannel()
    svc = service(database, make_agent(llm_breaker_failures=3), channel)
    turns = ["hi", "I need a home loan", "25 lakh", "20 years", "80,000 a month"]

    outcomes = [await svc.handle(say(text)) for text in turns]

    assert all(o is not None and o.reply is not None for o in outcomes)
    replies = await _replies(database)
    assert len(replies) == len(turns)
    assert all(r.meta["fallback"] is True for r in replies)
    assert all(r.meta["latency_ms"] < deadline * 1000 for r in replies)
    assert all(r.status == "sent" for r in replies)
    assert "**EMI: ₹21,696 per month**" in replies[-1].text
    # Three failed turns of (1 + 2 retries) requests each, then the breaker held the rest back.
    assert len(groq_server.requests) == 9
    assert [r.meta["fallback_reason"] for r in replies][-2:] == ["circuit_open", "circuit_open"]
    assert channel.finals[-1].text == replies[-1].text

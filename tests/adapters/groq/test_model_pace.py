"""A model that keeps answering within the channels' first-message hold is asked for whole
replies instead of streams, through the real groq SDK and the stand-in; one slow answer turns
streaming back on at once."""

from __future__ import annotations

from typing import Any

from core.agent.llm import ModelPace
from core.store.database import Database
from tests.adapters.groq.conftest import StreamingChannel, say, service
from tests.support import groq_server as g

ANSWER = "A home loan needs PAN, Aadhaar and salary slips. Property papers come later."


def test_the_pace_needs_enough_fast_requests_in_a_row() -> None:
    pace = ModelPace(below_seconds=0.3, after=3)
    for seconds in (0.1, 0.2):
        pace.note(seconds)
    assert not pace.whole
    pace.note(0.3)
    assert pace.whole
    pace.note(0.31)  # one slow request is enough to stream again
    assert not pace.whole
    pace.note(0.1)
    assert not pace.whole
    assert not ModelPace(below_seconds=0.3, after=0).whole  # 0: always stream


async def test_a_fast_model_is_asked_for_whole_replies_and_a_slow_one_streams_again(
    database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    agent = make_agent()
    after = agent.config.whole_after
    channel = StreamingChannel()
    svc = service(database, agent, channel)

    # Fast answers, streamed word by word, until enough in a row.
    for n in range(after):
        groq_server.script(g.text(ANSWER))
        await svc.handle(say(f"Which documents do I need for a home loan? ({n})", chat=f"c{n}"))
    assert [r.body["stream"] for r in groq_server.requests] == [True] * after
    assert all(channel.deltas[n] for n in range(after))

    # Now asked for whole: the channel gets the reply at once, the same text, stored once.
    groq_server.script(g.text(ANSWER, delay=0.5))  # and this one answers slowly
    outcome = await svc.handle(say("And for a car loan?", chat="whole"))
    assert groq_server.requests[-1].body["stream"] is False
    assert outcome is not None and outcome.reply is not None
    assert outcome.reply.text == ANSWER
    assert channel.deltas[-1] == []
    assert channel.finals[-1].text == ANSWER

    # It took longer than the hold: the next turn streams again.
    groq_server.script(g.text(ANSWER))
    await svc.handle(say("And for a personal loan?", chat="again"))
    assert groq_server.requests[-1].body["stream"] is True
    assert "".join(channel.deltas[-1]).startswith("A home loan needs PAN")

"""The model is told the customer's language and held to it: a reply in the wrong script is
asked for once more, and if it comes back wrong again the scripted agent answers in the
customer's language. Wrong-script text never reaches the channel, streamed or not."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.catalogue import load_catalogue
from core.i18n import in_script, tr
from core.money import format_money
from core.store.database import Database
from core.store.models import Conversation, Message
from tests.adapters.groq.conftest import StreamingChannel, say, service
from tests.support import groq_server as g
from tests.support.recording import RecordingPort

HINDI_ASK = "मुझे होम लोन चाहिए, कितना ब्याज लगेगा?"
HINDI_ANSWER = "होम लोन की ब्याज दर 8.5% सालाना है। आपको कितनी राशि चाहिए?"
ENGLISH_ANSWER = "The home loan rate is 8.5% a year. How much would you like to borrow?"
HINGLISH_ASK = "mujhe car loan chahiye, kitna byaj lagega?"
HINGLISH_ANSWER = "Car loan ka byaj 9.5% saalana hai. Aapko kitna amount chahiye?"


def _system(request: g.Recorded) -> str:
    return "\n".join(m["content"] for m in request.messages if m["role"] == "system")


async def _outbound(db: Database) -> list[Message]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(Message).where(Message.direction == "out").order_by(Message.id)
        )
        return list(rows.all())


def _amount_question(lang: str) -> str:
    """The scripted agent's question for a home loan's amount, as the catalogue words it."""
    home = load_catalogue().products["home"]
    return tr(
        lang,
        "How much would you like to borrow? ({low} to {high})",
        low=format_money(home.min_amount, "INR"),
        high=format_money(home.max_amount, "INR"),
    )


async def test_a_hindi_customer_gets_a_hindi_reply_and_the_model_was_told(
    database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.text(HINDI_ANSWER))
    channel = StreamingChannel()
    svc = service(database, make_agent(), channel)

    await svc.handle(say(HINDI_ASK))

    [request] = groq_server.requests
    assert "Write your replies in Hindi, in Devanagari script." in _system(request)
    assert channel.finals[0].text == HINDI_ANSWER
    [out] = await _outbound(database)
    assert out.meta["language"] == "hi" and out.meta["fallback"] is False
    assert "language_retries" not in out.meta
    async with database.transaction() as session:
        conversation = (await session.scalars(select(Conversation))).one()
    assert conversation.state["language"] == "hi"


async def test_an_english_customer_is_unchanged(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.text(ENGLISH_ANSWER))
    port = RecordingPort()
    svc = service(sqlite_database, make_agent(), port)

    await svc.handle(say("What is the interest rate for a home loan please?"))

    [request] = groq_server.requests
    assert "Write your replies in English." in _system(request)
    assert port.texts == [ENGLISH_ANSWER]


async def test_a_reply_in_the_wrong_script_is_asked_for_once_more_and_never_shown(
    database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.text(ENGLISH_ANSWER), g.text(HINDI_ANSWER))
    channel = StreamingChannel()
    svc = service(database, make_agent(), channel)

    await svc.handle(say(HINDI_ASK))

    first, second = groq_server.requests
    assert first.body["stream"] is True and second.body["stream"] is False
    reminder = second.messages[-1]
    assert reminder["role"] == "system"
    assert "not written in Hindi in Devanagari script" in reminder["content"]
    # The English attempt was held back whole: the channel only ever showed Hindi.
    assert "".join(channel.deltas[0]) == ""
    assert channel.finals[0].text == HINDI_ANSWER
    [out] = await _outbound(database)
    assert out.text == HINDI_ANSWER
    assert out.meta["language_retries"] == 1 and out.meta["fallback"] is False
    assert out.meta["llm_requests"] == 2


async def test_wrong_twice_the_scripted_agent_answers_in_the_language(
    database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.text(ENGLISH_ANSWER), g.text(ENGLISH_ANSWER))
    port = RecordingPort()
    agent = make_agent()
    svc = service(database, agent, port)

    await svc.handle(say("मुझे होम लोन चाहिए"))

    assert len(groq_server.requests) == 2
    [text] = port.texts
    assert _amount_question("hi") in text and ENGLISH_ANSWER not in text
    [out] = await _outbound(database)
    assert out.meta["fallback"] is True and out.meta["fallback_reason"] == "wrong_language"
    # The API answered: a wrong language is not a failure of the service.
    assert agent.breaker.state == "closed"


async def test_hinglish_is_held_to_latin_letters(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.text(HINDI_ANSWER), g.text(HINGLISH_ANSWER))
    port = RecordingPort()
    svc = service(sqlite_database, make_agent(), port)

    await svc.handle(say(HINGLISH_ASK))

    first, second = groq_server.requests
    assert "Never use Devanagari script." in _system(first)
    assert "Hinglish (Hindi in Latin letters)" in second.messages[-1]["content"]
    assert port.texts == [HINGLISH_ANSWER]


async def test_a_chosen_language_is_what_the_model_is_told(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.text(HINDI_ANSWER))
    port = RecordingPort()
    svc = service(sqlite_database, make_agent(), port)

    await svc.handle(say("/language hi"))
    # Written in English, but the customer chose Hindi: the model is told Hindi.
    await svc.handle(say("What is the interest rate for a home loan please?"))

    [request] = groq_server.requests
    assert "Write your replies in Hindi, in Devanagari script." in _system(request)
    assert port.texts[-1] == HINDI_ANSWER


def test_script_check() -> None:
    assert in_script(HINDI_ANSWER, "hi") and not in_script(HINDI_ANSWER, "hinglish")
    assert in_script(HINGLISH_ANSWER, "hinglish") and not in_script(HINGLISH_ANSWER, "hi")
    assert not in_script(ENGLISH_ANSWER, "hi") and in_script(ENGLISH_ANSWER, "en")
    # Terms a Hindi reply keeps in Latin letters do not count against it.
    assert in_script("आपकी EMI ₹23,265 होगी, PAN और KYC दस्तावेज़ चाहिए।", "hi")
    # Too short to tell: a figure or an "OK" passes in any language.
    assert in_script("OK, ₹25,00,000.", "hi")


async def test_a_hindi_question_is_searched_with_its_english_words(
    sqlite_database: Database, groq_server: g.GroqStandIn, make_agent: Any
) -> None:
    groq_server.script(g.text(HINDI_ANSWER))
    svc = service(sqlite_database, make_agent(), RecordingPort())

    await svc.handle(say("होम लोन के लिए कौन से दस्तावेज़ चाहिए?"))

    # The question reached the knowledge base expanded, so the model got the right reference.
    [request] = groq_server.requests
    assert 'heading="Home Loan > Documents required"' in _system(request)

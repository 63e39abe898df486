"""Conversations in Hindi and Hinglish through the real turn pipeline and scripted agent: the
replies come from the language's catalogue, the figures are exact, and the language is kept in
the conversation's state (detected, chosen with /language, or the configured default)."""

from __future__ import annotations

import re
from dataclasses import replace

from sqlalchemy import text

from core.agent.scripted import ScriptedAgent, ScriptedAgentConfig
from core.catalogue import load_catalogue
from core.conversation import ConversationService
from core.i18n import tr
from core.loan import emi
from core.messages import Attachment
from core.money import format_money
from core.store.database import Database
from core.store.turns import json_dict
from tests.support.builders import customer, service_for
from tests.support.recording import RecordingPort

DEVANAGARI = re.compile(r"[\u0900-\u097F]")
CATALOGUE = load_catalogue()
HOME = CATALOGUE.get("home")


async def _talk(service: ConversationService, *messages: str, chat: str = "chat-1") -> None:
    for message in messages:
        await service.handle(customer(message, chat=chat))


def _service(database: Database) -> tuple[ConversationService, RecordingPort]:
    service = service_for(database)
    port = RecordingPort()
    service.register_channel("test", port)
    return service, port


async def test_hindi_conversation_is_answered_in_hindi_with_the_exact_emi(
    database: Database,
) -> None:
    service, port = _service(database)
    await _talk(service, "नमस्ते", "मुझे होम लोन चाहिए", "25 लाख", "20 साल")
    await _talk(service, "मेरी सैलरी 1.2 लाख महीना है")
    assert all(DEVANAGARI.search(text) for text in port.texts)
    quote = port.sent[-1][1]
    expected = format_money(emi(2_500_000, HOME.annual_rate, 240))
    assert tr("hi", "- **EMI: {emi} per month**", emi=expected) in quote.text
    assert f"**EMI: {expected} प्रति माह**" in quote.text
    assert "₹25,00,000" in quote.text  # Indian grouping, digits untranslated
    assert [c.label for c in quote.choices] == ["हाँ, कॉल करें", "नहीं, धन्यवाद", "इसे PDF में पाएँ"]
    assert [c.value for c in quote.choices] == ["yes", "no", "/quote"]
    # The greeting's product buttons were in Hindi too, and still choose the product.
    greeting = port.sent[0][1]
    assert greeting.choices[0].label == "होम लोन"
    # A bare figure or a yes keeps the conversation in Hindi through the lead.
    await _talk(service, "हाँ", "yes", "Asha Verma", "98765 43210")
    assert port.texts[-1].startswith("धन्यवाद, Asha Verma।")
    assert "+919876543210" in port.texts[-1]


async def test_hinglish_conversation_is_answered_from_the_hinglish_catalogue(
    database: Database,
) -> None:
    service, port = _service(database)
    await _talk(service, "mujhe ghar ke liye loan chahiye", "30 lakh", "15 saal")
    assert port.texts[-1] == tr(
        "hinglish",
        "What is your net monthly income (take-home salary or business income)?",
    )
    assert port.texts[0].startswith("Badhiya, Home Loan. Aapko kitna loan chahiye?")
    await _talk(service, "meri salary 90 hazaar mahina hai")
    expected = format_money(emi(3_000_000, HOME.annual_rate, 180))
    quote = port.sent[-1][1]
    assert f"- **EMI: {expected} har mahine**" in quote.text
    assert "- Tenure: 180 mahine (15 saal)" in quote.text
    assert [c.label for c in quote.choices] == [
        "Haan, call karein",
        "Nahi, shukriya",
        "Isse PDF mein paayein",
    ]
    assert not DEVANAGARI.search(quote.text)


async def test_english_conversation_is_unchanged(database: Database) -> None:
    service, port = _service(database)
    await _talk(service, "hi", "I need a home loan", "25 lakh", "20 years", "1.2 lakh a month")
    assert port.texts[1] == (
        "Great, a Home Loan. How much would you like to borrow? (₹5,00,000 to ₹5,00,00,000)"
    )
    expected = format_money(emi(2_500_000, HOME.annual_rate, 240))
    assert f"- **EMI: {expected} per month**" in port.texts[-1]
    assert [c.label for c in port.sent[-1][1].choices] == [
        "Yes, call me",
        "No, thanks",
        "Get this as PDF",
    ]
    assert port.sent[0][1].choices[0].value == "I need a home loan"


async def test_language_command_switches_and_the_choice_persists(database: Database) -> None:
    service, port = _service(database)
    await _talk(service, "/language hi")
    assert port.texts[-1] == "ठीक है: अब से मैं हिंदी में जवाब दूँगा।"
    # A chosen language stays, whatever the customer writes next.
    await _talk(service, "I would like a car loan please")
    assert port.texts[-1].startswith("बढ़िया, कार लोन।")
    await _talk(service, "/language hinglish")
    assert port.texts[-1] == "Theek hai: ab se main Hinglish mein jawab dunga."
    await _talk(service, "8 lakh")
    assert port.texts[-1].startswith("Aap kitne time mein chukana chahenge?")
    await _talk(service, "/help")
    assert "/language en|hi|hinglish" in port.texts[-1] and "Commands:" in port.texts[-1]
    await _talk(service, "/start")
    assert port.texts[-1].startswith("Namaste! Main Esoteric hoon")
    await _talk(service, "/language en")
    assert port.texts[-1] == "Done: I'll reply in English from now on."
    await _talk(service, "/language tamil")
    assert port.texts[-1] == (
        'I don\'t speak "tamil" yet. Please choose a language: /language en (English), '
        "/language hi (Hindi) or /language hinglish (Hinglish)."
    )
    await _talk(service, "/language")
    assert port.texts[-1].startswith("Please choose a language: /language en (English)")


async def test_reset_answers_in_the_language_and_the_next_conversation_keeps_it(
    database: Database,
) -> None:
    service, port = _service(database)
    await _talk(service, "/language hi", "I need a home loan", "/reset")
    assert port.texts[-1].startswith("हो गया: मैंने हमारी बातचीत साफ़ कर दी है।")
    # A fresh conversation (the loan forgotten), in the language the customer chose.
    await _talk(service, "hello")
    assert DEVANAGARI.search(port.texts[-1])
    assert not port.texts[-1].startswith("Hello! I'm Esoteric")
    async with database.transaction() as session:
        rows = (
            await session.execute(text("SELECT status, state FROM conversations ORDER BY id"))
        ).all()
    assert [r[0] for r in rows] == ["closed", "active"]
    state = json_dict(rows[1][1])
    assert state.get("language") == "hi" and state.get("language_chosen")
    assert "product" not in state


async def test_configured_default_language_until_the_customer_shows_theirs(
    database: Database,
) -> None:
    scripted = ScriptedAgent(CATALOGUE, ScriptedAgentConfig(default_language="hinglish"))
    service = ConversationService(database, scripted, scripted)
    port = RecordingPort()
    service.register_channel("test", port)
    await _talk(service, "hi", "/fly")
    assert port.texts[0].startswith("Namaste! Main Esoteric hoon")
    assert port.texts[1] == (
        "Maaf kijiye, main /fly command nahi jaanta. Main kya kar sakta hoon, yeh dekhne ke "
        "liye /help likhiye."
    )
    await _talk(service, "मुझे कार लोन चाहिए")
    assert DEVANAGARI.search(port.texts[-1])
    await _talk(service, "I would like a personal loan please")
    assert port.texts[-1].startswith("Sure, let's look at a Personal Loan.")


async def test_the_pipelines_own_notices_follow_the_customers_language(
    database: Database,
) -> None:
    service = service_for(database, flood_per_minute=6)
    port = RecordingPort()
    service.register_channel("test", port)
    # A first message that is too long is answered in the language it is written in.
    too_long = "मुझे होम लोन चाहिए " * 400
    await _talk(service, too_long)
    assert port.texts[-1] == tr(
        "hi",
        "That message is too long for me ({length} characters; the limit is {limit}). "
        "Please send a shorter one.",
        length=f"{len(too_long):,}",
        limit="4,000",
    )
    await _talk(service, "मुझे होम लोन चाहिए")
    # A photo without a caption: the conversation's language, and the kind in it too.
    photo = customer("")
    photo = replace(photo, attachments=(Attachment("photo"),))
    await service.handle(photo)
    assert port.texts[-1] == tr(
        "hi",
        "Thanks! I can only read text messages, so I can't open that {kind}. Please type your "
        "question and I'll help.",
        kind="फ़ोटो",
    )
    await _talk(service, "/subscribe")
    assert port.texts[-1] == tr(
        "hi", "Done: you'll receive our occasional announcements. Send /unsubscribe to stop."
    )
    await _talk(service, "/unsubscribe")
    assert port.texts[-1].startswith("हो गया: अब आपको सूचनाएँ नहीं मिलेंगी।")
    # Past six messages a minute: one "slow down", in Hindi.
    before = len(port.texts)
    await _talk(service, "25 लाख", "20 साल", "ठीक है")
    slow = tr(
        "hi",
        "You're sending messages faster than I can read them. Please wait a minute, then send "
        "your question again.",
    )
    assert port.texts[before:].count(slow) == 1
    assert all(DEVANAGARI.search(text) for text in port.texts)

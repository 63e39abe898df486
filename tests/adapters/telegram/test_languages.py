"""Hindi- and Hinglish-speaking customers on Telegram, end to end: the real python-telegram-bot
against the stand-in Bot API, the real core, scripted agent and SQLite. Replies and buttons are
in the customer's language."""

from __future__ import annotations

import re

from tests.adapters.telegram.conftest import TelegramBot
from tests.adapters.telegram.test_end_to_end import buttons, expected_emi
from tests.support.telegram_server import callback_update

ASHA = 123456789
DEVANAGARI = re.compile(r"[\u0900-\u097F]")


async def test_a_hindi_conversation_with_buttons_reaches_the_exact_emi(bot: TelegramBot) -> None:
    greeting = await bot.say(ASHA, "नमस्ते")
    assert greeting.text.startswith("नमस्ते! मैं Esoteric हूँ")
    choices = buttons(greeting)
    assert "होम लोन" in choices and "Home Loan" not in choices

    reply = await bot.exchange(ASHA, callback_update(bot.next_id(), ASHA, choices["होम लोन"]))
    assert reply.text.startswith("बढ़िया, होम लोन। आप कितना लोन लेना चाहेंगे?")
    await bot.say(ASHA, "25 लाख")
    await bot.say(ASHA, "20 साल")
    answer = await bot.say(ASHA, "मेरी सैलरी 1.2 लाख महीना है")

    assert f"<b>EMI: {expected_emi(2_500_000, 240)} प्रति माह</b>" in answer.text
    assert "• लोन राशि: ₹25,00,000" in answer.text
    assert set(buttons(answer)) == {"हाँ, कॉल करें", "नहीं, धन्यवाद", "इसे PDF में पाएँ"}
    assert all(DEVANAGARI.search(text) for text in bot.server.texts(ASHA))
    assert all(c.status == 200 for c in bot.server.calls_to("sendMessage", ASHA, ok=None))


async def test_a_hinglish_conversation_in_one_message_reaches_the_exact_emi(
    bot: TelegramBot,
) -> None:
    greeting = await bot.say(ASHA, "namaste, mujhe loan chahiye")
    assert greeting.text.startswith("Namaste! Main Esoteric hoon")
    assert "Home Loan" in buttons(greeting)  # product names stay as Hinglish writers write them
    answer = await bot.say(
        ASHA, "mujhe ghar ke liye 25 lakh chahiye, 20 saal ke liye, meri salary 1.2 lakh mahina hai"
    )
    assert f"<b>EMI: {expected_emi(2_500_000, 240)} har mahine</b>" in answer.text
    assert "per month" not in answer.text
    texts = bot.server.texts(ASHA)
    assert len(texts) == 2 and not any(DEVANAGARI.search(text) for text in texts)
    assert all(c.status == 200 for c in bot.server.calls_to("sendMessage", ASHA, ok=None))


async def test_language_command_on_telegram(bot: TelegramBot) -> None:
    switched = await bot.say(ASHA, "/language hinglish")
    assert switched.text == "Theek hai: ab se main Hinglish mein jawab dunga."
    greeting = await bot.say(ASHA, "/start")
    assert greeting.text.startswith("Namaste! Main Esoteric hoon")
    unknown = await bot.say(ASHA, "/language klingon")
    assert unknown.text.startswith('Main abhi "klingon" nahi bolta.')

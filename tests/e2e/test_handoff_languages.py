"""A Hindi and a Hinglish customer on Telegram hand over to a Slack rep and back: the quote's
buttons, the advisor-joined notice and the welcome back are in the customer's language; the
rep's own words reach them as written. Real python-telegram-bot and slack-bolt clients against
the stand-ins, the composition root's wiring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.i18n import tr
from core.loan import emi
from core.money import format_money
from tests.support.desk import REP_A, REP_A_NAME, Desk, running_desk
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer

DEVANAGARI = re.compile(r"[\u0900-\u097F]")

# Each customer gives the whole loan in one message, then their income, then asks for a person.
DIALOGUES = {
    "hi": ("मुझे 50 लाख का होम लोन चाहिए, 20 साल के लिए", "मेरी सैलरी 1.5 लाख महीना है"),
    "hinglish": (
        "mujhe ghar ke liye 50 lakh ka loan chahiye, 20 saal ke liye",
        "meri salary 1.5 lakh mahina hai",
    ),
}
EMI_LINE = {"hi": "EMI: {emi} प्रति माह", "hinglish": "EMI: {emi} har mahine"}


def _buttons(telegram_api: TelegramServer, chat_id: int) -> list[str]:
    markup = telegram_api.calls_to("sendMessage", chat_id)[-1].params.get("reply_markup")
    markup = json.loads(markup) if isinstance(markup, str) else markup
    return [button["text"] for row in markup["inline_keyboard"] for button in row]


async def _handoff_id(desk: Desk) -> str:
    return str(await desk.scalar("SELECT max(id) FROM handoffs"))


@pytest.mark.parametrize("language", ["hi", "hinglish"])
async def test_a_customer_hands_over_and_back_in_their_language(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, language: str
) -> None:
    chat = 6101
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        for words in DIALOGUES[language]:
            await desk.customer(chat, words)
        quote = desk.telegram_texts(chat)[-1]
        expected = format_money(emi(5_000_000, desk.runtime.catalogue.get("home").annual_rate, 240))
        assert EMI_LINE[language].format(emi=expected) in quote
        assert _buttons(telegram_api, chat) == [
            tr(language, "Yes, call me"),
            tr(language, "No, thanks"),
            tr(language, "Get this as PDF"),
        ]

        await desk.customer(chat, "/human")
        card = str(desk.cards()[-1]["ts"])
        await desk.click(REP_A, "esoteric_handoff_claim", await _handoff_id(desk), card)
        joined = tr(
            language,
            "{name}, one of our loan advisors, has joined and will reply here shortly.",
            name=REP_A_NAME,
        )
        assert desk.telegram_texts(chat)[-1] == joined
        assert not joined.endswith("has joined and will reply here shortly.")  # not English

        # The rep writes in their own words; those reach the customer unchanged.
        await desk.rep_says(REP_A, card, "Namaste! Main aapki madad karungi.")
        assert desk.telegram_texts(chat)[-1] == f"{REP_A_NAME}: Namaste! Main aapki madad karungi."

        await desk.click(REP_A, "esoteric_handoff_release", await _handoff_id(desk), card)
        back = tr(
            language,
            "Thanks for talking with {name}. I'm Esoteric, the AI assistant, and I'm back to "
            "help: ask me anything about your loan.",
            name=REP_A_NAME,
        )
        assert desk.telegram_texts(chat)[-1] == back
        shown = desk.telegram_texts(chat)
        if language == "hi":
            assert DEVANAGARI.search(joined) and DEVANAGARI.search(back)
        else:
            assert not any(DEVANAGARI.search(t) for t in shown)
        stored = await desk.rows("SELECT text, meta FROM messages WHERE direction = 'out'")
        notices = [row.text for row in stored if "handoff" in json.loads(row.meta)]
        assert notices == [joined, back]

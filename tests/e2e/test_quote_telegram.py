"""A customer's quote as a PDF on Telegram: the "Get this as PDF" button and /quote, the file
sent with the real python-telegram-bot's sendDocument (multipart) to the stand-in, read back
with pypdf, the same bytes when asked again, and what was sent stored with the reply."""

from __future__ import annotations

import io
import json
from pathlib import Path

from pypdf import PdfReader

from core.loan import emi
from core.money import format_money
from tests.support.desk import running_desk
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer

CHAT = 9101


def _pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


async def test_the_quote_comes_as_a_pdf_and_is_the_same_file_each_time(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        await desk.customer(CHAT, "/quote")
        assert desk.telegram_texts(CHAT)[-1].startswith("There is no quote yet.")
        assert telegram_api.documents == []

        await desk.customer(CHAT, "I need a home loan of 25 lakh for 20 years")
        await desk.customer(CHAT, "my salary is 1.5 lakh a month")
        markup = telegram_api.calls_to("sendMessage", CHAT)[-1].params["reply_markup"]
        markup = json.loads(markup) if isinstance(markup, str) else markup
        buttons = [b for row in markup["inline_keyboard"] for b in row]
        assert [b["text"] for b in buttons][-1] == "Get this as PDF"

        await desk.press(CHAT, buttons[-1]["callback_data"])
        [(chat, filename, data)] = telegram_api.documents
        assert chat == str(CHAT) and filename.startswith("KFS-") and filename.endswith(".pdf")
        assert data.startswith(b"%PDF-")
        text = _pdf_text(data)
        expected = format_money(emi(2_500_000, desk.runtime.catalogue.get("home").annual_rate, 240))
        for figure in (expected, "₹25,00,000", "240", filename.removesuffix(".pdf")):
            assert figure in text, figure
        assert "This is a quote, not a sanction" in text
        said = desk.telegram_texts(CHAT)[-1]
        assert said.startswith("Here is your quote as a PDF (reference KFS-")

        # Asked again: the same document, byte for byte.
        await desk.customer(CHAT, "/quote")
        assert len(telegram_api.documents) == 2 and telegram_api.documents[1][2] == data

        # Each send is stored with the figures the customer received.
        rows = await desk.rows(
            "SELECT meta FROM messages WHERE direction = 'out' ORDER BY id DESC LIMIT 2"
        )
        for row in rows:
            sent = desk.json(row.meta)["document"]
            assert sent["reference"] == filename.removesuffix(".pdf")
            home_rate = desk.runtime.catalogue.get("home").annual_rate
            assert sent["figures"]["emi"] == str(emi(2_500_000, home_rate, 240))
            assert sent["product"] == "home" and sent["tenure_months"] == 240


async def test_a_hindi_customer_gets_the_offer_in_hindi(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        await desk.customer(CHAT, "मुझे 25 लाख का होम लोन चाहिए, 20 साल के लिए")
        await desk.customer(CHAT, "मेरी सैलरी 1.5 लाख महीना है")
        markup = telegram_api.calls_to("sendMessage", CHAT)[-1].params["reply_markup"]
        markup = json.loads(markup) if isinstance(markup, str) else markup
        labels = [b["text"] for row in markup["inline_keyboard"] for b in row]
        assert labels[-1] == "इसे PDF में पाएँ"
        await desk.customer(CHAT, "/quote")
        assert desk.telegram_texts(CHAT)[-1].startswith("यह रहा आपका कोटेशन PDF में")
        assert len(telegram_api.documents) == 1

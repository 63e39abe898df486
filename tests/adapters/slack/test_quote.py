"""Loan quotes as PDF files on Slack: ``/esoteric quote`` and a lead card's "Send quote PDF"
button, uploaded by the real slack_sdk with Slack's external upload flow to the stand-in, read
back with pypdf, and each send in the audit log with the quote's figures."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader

from adapters.slack.render import QUOTE_ACTION
from core.loan import emi
from core.money import format_money
from tests.adapters.slack.conftest import ADMIN, OUTSIDER, REP, SALES
from tests.support.desk import QUALIFY, Desk, running_desk
from tests.support.slack_server import SlackStandIn, Upload
from tests.support.telegram_server import TelegramServer

CUSTOMER = 6101


def _pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def _emi(desk: Desk, product: str, amount: int, months: int) -> str:
    rate = desk.runtime.catalogue.get(product).annual_rate
    return format_money(emi(Decimal(amount), rate, months), desk.runtime.catalogue.currency, True)


async def _audit_rows(desk: Desk, actor: str) -> list[tuple[str, str | None, dict]]:
    rows = await desk.rows(
        "SELECT outcome, target, details FROM audit_log WHERE actor = :a AND action = "
        "'quote_sent' ORDER BY id",
        a=actor,
    )
    return [(r.outcome, r.target, desk.json(r.details)) for r in rows]


def _check_pdf(upload: Upload, expected_emi: str, amount: str, months: int) -> str:
    """The upload is a PDF with the quote's figures and its reference; returns the reference."""
    assert upload.data is not None and upload.data.startswith(b"%PDF-")
    assert upload.length == len(upload.data)
    reference = upload.filename.removesuffix(".pdf")
    assert reference.startswith("KFS-") and upload.filename.endswith(".pdf")
    text = _pdf_text(upload.data)
    for figure in (expected_emi, amount, str(months), reference, "not a sanction"):
        assert figure in text, figure
    return reference


@pytest.mark.parametrize(
    "words",
    [
        "25L home 20y",
        "25 lakh home loan 20 years",
        "2500000 home 240m",
        "25,00,000 Home 240 months",
    ],
)
async def test_slash_quote_shares_the_pdf_in_the_channel(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, words: str
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        said = await desk.slash(REP, f"quote {words}")

        # The three steps of the upload flow, in order, with the file's real length.
        methods = [c.method for c in slack_api.calls if c.method.startswith("files.")]
        assert methods == ["files.getUploadURLExternal", "files.completeUploadExternal"]
        [reserve] = slack_api.calls_to("files.getUploadURLExternal")
        [upload] = slack_api.shared()
        assert int(reserve.params["length"]) == len(upload.data or b"")
        assert reserve.params["filename"] == upload.filename
        assert upload.channel_id == SALES and upload.thread_ts is None

        expected = _emi(desk, "home", 2_500_000, 240)
        reference = _check_pdf(upload, expected, "₹25,00,000", 240)
        assert upload.initial_comment and reference in upload.initial_comment
        assert f"<@{REP}>" in upload.initial_comment

        # The rep is told, privately, what was sent.
        assert f"Shared quote {reference} in this channel" in said
        assert expected in said and "Home Loan" in said

        # The send is in the audit log under the rep, with the quote's figures.
        [(outcome, _, details)] = await _audit_rows(desk, f"slack:{REP}")
        assert outcome == "ok"
        assert details["reference"] == reference and details["product"] == "home"
        assert Decimal(details["amount"]) == 2_500_000 and details["tenure_months"] == 240
        assert format_money(Decimal(details["figures"]["emi"]), "INR", True) == expected
        assert details["slack"]["channel"] == SALES
        assert details["slack"]["file_id"] == upload.file_id


@pytest.mark.parametrize(
    ("words", "problem"),
    [
        ("quote lots home 20y", "I couldn't read the amount 'lots'"),
        ("quote -5L home 20y", "I couldn't read the amount"),
        ("quote 25L spaceship 20y", "No product matches 'spaceship'"),
        ("quote 25L home forever", "I couldn't read the tenure 'forever'"),
        ("quote 25L home", "Usage: quote AMOUNT PRODUCT TENURE"),
        ("quote 500 home 20y", "Sorry, I can't quote that: the Home Loan amount must be"),
    ],
)
async def test_a_bad_quote_command_is_explained_and_nothing_is_uploaded(
    tmp_path: Path,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
    words: str,
    problem: str,
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        said = await desk.slash(REP, words)
        assert problem in said
        _, body = slack_api.responses[-1]
        assert body["response_type"] == "ephemeral"
        assert not [c for c in slack_api.calls if c.method.startswith("files.")]
        assert slack_api.uploads == {}
        assert await _audit_rows(desk, f"slack:{REP}") == []


async def test_a_refused_upload_is_told_to_the_rep_and_audited(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        slack_api.fail("files.completeUploadExternal", "not_in_channel")
        said = await desk.slash(REP, "quote 25L home 20y")
        assert "couldn't share the quote's PDF here" in said and "not_in_channel" in said
        assert slack_api.shared() == []
        [(outcome, _, details)] = await _audit_rows(desk, f"slack:{REP}")
        assert outcome == "failed" and details["slack"]["error"] == "not_in_channel"
        assert details["figures"]["emi"]


async def test_help_lists_the_quote_command(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        said = await desk.slash(REP, "help")
        assert "/esoteric quote AMOUNT PRODUCT TENURE" in said


async def _lead_card(desk: Desk) -> str:
    for words in QUALIFY:
        await desk.customer(CUSTOMER, words)
    cards = desk.cards()
    assert len(cards) == 1
    return str(cards[-1]["ts"])


def _quote_button(desk: Desk, card: str) -> dict:
    buttons = [
        element
        for block in desk.card_blocks(card)
        if block["type"] == "actions"
        for element in block["elements"]
    ]
    [button] = [b for b in buttons if b["action_id"] == QUOTE_ACTION]
    assert button["text"]["text"] == "Send quote PDF"
    return button


async def test_the_lead_card_button_shares_the_leads_quote_into_its_thread(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        card = await _lead_card(desk)
        button = _quote_button(desk, card)
        lead_id = int(button["value"])

        await desk.click(REP, QUOTE_ACTION, button["value"], card)
        [upload] = slack_api.shared()
        assert upload.channel_id == SALES and upload.thread_ts == card
        expected = _emi(desk, "home", 5_000_000, 240)
        reference = _check_pdf(upload, expected, "₹50,00,000", 240)
        assert upload.initial_comment is not None
        assert (
            f"lead #{lead_id}" in upload.initial_comment and f"<@{REP}>" in upload.initial_comment
        )
        completed = slack_api.calls_to("files.completeUploadExternal")[-1].params
        assert completed["channel_id"] == SALES and completed["thread_ts"] == card
        assert json.loads(completed["files"])[0]["id"] == upload.file_id

        [(outcome, target, details)] = await _audit_rows(desk, f"slack:{REP}")
        assert (outcome, target) == ("ok", f"lead:{lead_id}")
        assert details["reference"] == reference
        assert format_money(Decimal(details["figures"]["emi"]), "INR", True) == expected
        assert details["slack"] == {
            "channel": SALES,
            "thread_ts": card,
            "file_id": upload.file_id,
        }

        # An admin who is not in the sales channel may send it too.
        await desk.click(ADMIN, QUOTE_ACTION, button["value"], card)
        assert len(slack_api.shared()) == 2
        assert [o for o, _, _ in await _audit_rows(desk, f"slack:{ADMIN}")] == ["ok"]


async def test_only_the_sales_team_may_press_send_quote_pdf(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        card = await _lead_card(desk)
        button = _quote_button(desk, card)

        await desk.click(OUTSIDER, QUOTE_ACTION, button["value"], card)
        assert slack_api.uploads == {}
        assert not [c for c in slack_api.calls if c.method.startswith("files.")]
        [refusal] = desk.ephemerals(OUTSIDER)
        assert "only for the sales team" in refusal
        assert "Ravi" not in refusal and "₹" not in refusal
        rows = await _audit_rows(desk, f"slack:{OUTSIDER}")
        assert [(o, t) for o, t, _ in rows] == [("refused", f"lead:{button['value']}")]

        # A lead that does not exist: told so, nothing uploaded.
        await desk.click(REP, QUOTE_ACTION, "999", card)
        assert slack_api.uploads == {}
        assert "There is no lead #999" in desk.ephemerals(REP)[-1]

"""The /esoteric slash command and its buttons, through slack-bolt over signed HTTP."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import select

from adapters.slack import SlackChannel
from bot.runtime import Runtime
from core.agent.base import LeadDraft
from core.loan import emi
from core.messages import utcnow
from core.money import format_money
from core.store.models import AuditEntry, Lead
from tests.adapters.slack.conftest import PAYLOADS, SlackClient, stored_messages
from tests.support.slack_server import SlackStandIn, sample
from tests.unit.test_salesdesk import insert_lead

_triggers = itertools.count(1)


def command(text: str, response_url: str | None) -> dict[str, str]:
    """The sample slash command, as /esoteric with ``text``."""
    fields = dict(parse_qsl((PAYLOADS / "slash_command.form.txt").read_text().strip()))
    # Slack gives every invocation its own trigger id (the same signed body twice is a replay).
    fields.update(command="/esoteric", text=text, trigger_id=f"7012345678901.{next(_triggers)}")
    if response_url is None:
        del fields["response_url"]
    else:
        fields["response_url"] = response_url
    return fields


def _sections(body: dict[str, Any]) -> str:
    return "\n".join(b["text"]["text"] for b in body["blocks"] if b["type"] == "section")


async def _ask(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, text: str
) -> dict[str, Any]:
    before = len(slack_api.responses)
    response = await slack.form(command(text, slack_api.response_url()))
    # Acknowledged at once with an empty body; the answer follows on response_url.
    assert response.status_code == 200 and response.content == b""
    await channel.idle()
    assert len(slack_api.responses) == before + 1
    key, body = slack_api.responses[-1]
    assert key == "cmd" and body["response_type"] == "ephemeral"
    return body


async def test_emi_is_exact(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    body = await _ask(slack, channel, slack_api, "emi 500000 10.5 60")
    expected = emi(Decimal(500000), Decimal("10.5"), 60)
    assert f"*EMI: {format_money(expected, 'INR', paise=True)} per month*" in _sections(body)
    # Desk commands are not conversation turns: nothing is stored as a message.
    assert await stored_messages(runtime) == 0


async def test_emi_accepts_lakh_and_years(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn
) -> None:
    body = await _ask(slack, channel, slack_api, "emi 25 lakh 8.5% 20y")
    expected = emi(Decimal(2_500_000), Decimal("8.5"), 240)
    assert format_money(expected, "INR", paise=True) in _sections(body)


async def test_bad_input_gets_a_clear_usage_message(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn
) -> None:
    assert "Usage:" in _sections(await _ask(slack, channel, slack_api, "emi 500000"))
    assert "rate" in _sections(await _ask(slack, channel, slack_api, "emi 500000 ten 60"))
    assert "tenure" in _sections(await _ask(slack, channel, slack_api, "emi 500000 10 0"))
    unknown = _sections(await _ask(slack, channel, slack_api, "frobnicate"))
    assert "frobnicate" in unknown and "emi AMOUNT RATE MONTHS" in unknown
    assert "No product matches" in _sections(await _ask(slack, channel, slack_api, "product yacht"))


async def test_help_lists_every_subcommand(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn
) -> None:
    text = _sections(await _ask(slack, channel, slack_api, ""))
    for sub in ("help", "emi", "product", "lead ID", "leads today"):
        assert f"/esoteric {sub}" in text


async def test_product_is_cited_from_the_catalogue(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    body = await _ask(slack, channel, slack_api, "product education")
    product = runtime.catalogue.get("education")
    assert f"*{product.name}*" in _sections(body)
    context = [b for b in body["blocks"] if b["type"] == "context"]
    assert context and "products.toml" in context[0]["elements"][0]["text"]


async def _lead(runtime: Runtime, name: str = "Ravi <Kumar> & Sons") -> int:
    draft = LeadDraft(
        product="home",
        amount=Decimal(2_500_000),
        tenure_months=240,
        monthly_income=Decimal(90_000),
        emi=emi(2_500_000, "8.5", 240),
        eligible=True,
        name=name,
        phone="9876543210",
        consent=True,
    )
    return await insert_lead(runtime.db, draft, utcnow())


async def test_lead_card_with_buttons_and_a_status_change_by_button(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    lead_id = await _lead(runtime)
    card = await _ask(slack, channel, slack_api, f"lead {lead_id}")
    text = _sections(card)
    assert f"Lead #{lead_id}" in text and "(new)" in text
    assert "Ravi &lt;Kumar&gt; &amp; Sons" in text  # mrkdwn escaping of &, <, >
    [actions] = [b for b in card["blocks"] if b["type"] == "actions"]
    buttons = {e["text"]["text"]: e for e in actions["elements"]}
    assert set(buttons) == {"Mark contacted", "Mark won", "Mark lost"}

    # The rep clicks "Mark contacted": Slack posts a block_actions payload.
    payload = sample("block_actions.payload.json")
    button = buttons["Mark contacted"]
    payload["actions"] = [
        {**button, "block_id": actions["block_id"], "action_ts": "1767225900.123456"}
    ]
    payload["response_url"] = slack_api.response_url("action")
    response = await slack.form({"payload": json.dumps(payload)})
    assert response.status_code == 200
    await channel.idle()

    key, update = slack_api.responses[-1]
    assert key == "action" and update["replace_original"] is True
    assert f"Lead #{lead_id} marked contacted (was new)" in _sections(update)
    async with runtime.db.transaction() as session:
        lead = await session.get(Lead, lead_id)
        audit = (await session.scalars(select(AuditEntry))).all()
    assert lead is not None and lead.status == "contacted"
    assert [(a.actor, a.action, a.target) for a in audit] == [
        ("slack:U0HUMAN001", "lead_status", f"lead:{lead_id}")
    ]


async def test_unknown_lead_and_bad_status(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    assert "no lead #999" in _sections(await _ask(slack, channel, slack_api, "lead 999"))
    lead_id = await _lead(runtime)
    bad = _sections(await _ask(slack, channel, slack_api, f"lead {lead_id} maybe"))
    assert "not a lead status" in bad
    async with runtime.db.transaction() as session:
        lead = await session.get(Lead, lead_id)
    assert lead is not None and lead.status == "new"


async def test_leads_today(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    assert "No leads yet today" in _sections(await _ask(slack, channel, slack_api, "leads today"))
    first, second = await _lead(runtime, "Asha"), await _lead(runtime, "Vikram")
    text = _sections(await _ask(slack, channel, slack_api, "leads today"))
    assert "*2 leads today*" in text
    assert f"#{first} Home Loan" in text and f"#{second} Home Loan" in text


async def test_without_response_url_the_answer_is_a_post_ephemeral(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn
) -> None:
    response = await slack.form(command("emi 100000 12 12", None))
    assert response.status_code == 200
    await channel.idle()
    [call] = slack_api.calls_to("chat.postEphemeral")
    assert call.params["channel"] == "C0CHANNEL01" and call.params["user"] == "U0HUMAN001"
    expected = format_money(emi(100000, "12", 12), "INR", paise=True)
    assert any(expected in b["text"]["text"] for b in call.params["blocks"] if "text" in b)


async def test_quick_reply_button_is_said_in_its_conversation(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    payload = sample("block_actions.payload.json")
    payload["channel"] = {"id": "D0DMCHAN01", "name": "directmessage"}
    payload["container"]["channel_id"] = "D0DMCHAN01"
    payload["actions"] = [
        {
            "type": "button",
            "action_id": "esoteric_choice_0",
            "block_id": "esoteric_choices_0",
            "text": {"type": "plain_text", "text": "Car Loan"},
            "value": "tell me about the car loan",
            "action_ts": "1767225901.000001",
        }
    ]
    assert (await slack.form({"payload": json.dumps(payload)})).status_code == 200
    await channel.idle()
    [post] = slack_api.posts()
    assert post["channel"] == "D0DMCHAN01" and "thread_ts" not in post
    assert "*Car Loan*" in _sections(post)
    assert await stored_messages(runtime, text="tell me about the car loan") == 1


async def test_readiness_reports_the_slack_channel(
    slack: SlackClient, channel: SlackChannel
) -> None:
    response = await slack.http.get("/ready")
    check = response.json()["checks"]["slack"]
    # Public: it says the channel works, not who the bot is.
    assert check == {"ok": True, "detail": "HTTP events"}
    assert "U0BOT" not in response.text

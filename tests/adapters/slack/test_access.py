"""Who sees lead data on Slack, and requests sent twice: through slack-bolt over signed HTTP,
against the stand-in Slack (its ``conversations.members`` says who is in the sales channel).

Lead data is for members of the sales channel and for admins; everyone else is refused with no
customer data, and the refusal is audited. A signed slash command or button press sent again is
refused with 401 and runs nothing."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from sqlalchemy import select

from adapters.slack import SlackChannel, SlackConfig
from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from core.agent.base import LeadDraft
from core.loan import emi
from core.messages import utcnow
from core.store.models import AuditEntry, Lead
from tests.adapters.slack.conftest import (
    ADMIN,
    BOT_TOKEN,
    OUTSIDER,
    PAYLOADS,
    REP,
    SALES,
    SECRET,
    SlackClient,
    event,
    sign,
    stored_messages,
)
from tests.support.slack_server import SlackStandIn, sample
from tests.unit.test_salesdesk import insert_lead

_serial = itertools.count(1)
# What the lead below says about its customer; none of it may reach an outsider.
CUSTOMER_DATA = ("Ravi", "Kumar", "9876543210", "90,000", "25,00,000", "Home Loan")


async def _lead(runtime: Runtime) -> int:
    draft = LeadDraft(
        product="home",
        amount=Decimal(2_500_000),
        tenure_months=240,
        monthly_income=Decimal(90_000),
        emi=emi(2_500_000, "8.5", 240),
        eligible=True,
        name="Ravi Kumar",
        phone="9876543210",
        consent=True,
    )
    return await insert_lead(runtime.db, draft, utcnow())


def command_form(text: str, user: str, response_url: str) -> dict[str, str]:
    """``/esoteric text`` typed by ``user`` in some channel (not the sales channel)."""
    fields = dict(parse_qsl((PAYLOADS / "slash_command.form.txt").read_text().strip()))
    fields.update(
        command="/esoteric",
        text=text,
        user_id=user,
        response_url=response_url,
        trigger_id=f"7012345678901.1234567890123.{next(_serial):032x}",
    )
    return fields


def desk_button_form(user: str, value: str, response_url: str) -> dict[str, str]:
    """A press of a lead's "Mark ..." button (a desk button) by ``user``."""
    payload = sample("block_actions.payload.json")
    payload["user"] = {"id": user, "username": user.lower(), "name": user.lower()}
    payload["response_url"] = response_url
    payload["actions"] = [
        {
            "type": "button",
            "action_id": "esoteric_desk_2",
            "block_id": "esoteric_choices_0",
            "text": {"type": "plain_text", "text": "Mark lost"},
            "value": value,
            "action_ts": f"1767225900.{next(_serial):06d}",
        }
    ]
    return {"payload": json.dumps(payload)}


async def _answer(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, form: dict[str, str]
) -> str:
    """Send a form request; everything the ephemeral answer says (text and blocks)."""
    before = len(slack_api.responses)
    response = await slack.form(form)
    assert response.status_code == 200, response.text
    await channel.idle()
    assert len(slack_api.responses) == before + 1
    _, body = slack_api.responses[-1]
    return json.dumps(body, ensure_ascii=False)


async def ask(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, text: str, user: str
) -> str:
    return await _answer(
        slack, channel, slack_api, command_form(text, user, slack_api.response_url())
    )


async def _status(runtime: Runtime, lead_id: int) -> str:
    async with runtime.db.transaction() as session:
        lead = await session.get(Lead, lead_id)
    assert lead is not None
    return lead.status


async def _audit(runtime: Runtime, actor: str) -> list[tuple[str, str, str | None, Any]]:
    async with runtime.db.transaction() as session:
        rows = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.actor == actor).order_by(AuditEntry.id)
            )
        ).all()
    return [(r.action, r.outcome, r.target, r.details.get("reason")) for r in rows]


def _no_customer_data(text: str) -> None:
    for fact in CUSTOMER_DATA:
        assert fact not in text, f"{fact!r} shown to an outsider: {text}"


# -- lead data -----------------------------------------------------------------------------------


async def test_an_outsider_gets_no_lead_data_and_changes_nothing(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    lead_id = await _lead(runtime)
    for words in (f"lead {lead_id}", f"lead {lead_id} lost", "leads today", "lead 999"):
        answer = await ask(slack, channel, slack_api, words, OUTSIDER)
        assert "only for the sales team" in answer
        _no_customer_data(answer)
        assert "no lead #999" not in answer  # not even whether a lead exists
    assert await _status(runtime, lead_id) == "new"
    assert await _audit(runtime, f"slack:{OUTSIDER}") == [
        ("lead", "refused", f"lead:{lead_id}", "denied"),
        ("lead_status", "refused", f"lead:{lead_id}", "denied"),
        ("leads_today", "refused", None, "denied"),
        ("lead", "refused", "lead:999", "denied"),
    ]
    # The rest of the desk is open to everyone in the workspace.
    assert "EMI:" in await ask(slack, channel, slack_api, "emi 500000 10.5 60", OUTSIDER)


async def test_an_outsider_pressing_a_lead_button_is_refused(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    lead_id = await _lead(runtime)
    form = desk_button_form(OUTSIDER, f"/esoteric lead {lead_id} lost", slack_api.response_url())
    answer = await _answer(slack, channel, slack_api, form)
    assert "only for the sales team" in answer
    _no_customer_data(answer)
    assert await _status(runtime, lead_id) == "new"
    assert await _audit(runtime, f"slack:{OUTSIDER}") == [
        ("lead_status", "refused", f"lead:{lead_id}", "denied")
    ]


async def test_a_member_and_an_admin_who_is_no_member_see_and_change_leads(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    lead_id = await _lead(runtime)
    assert ADMIN not in slack_api.members[SALES]
    for user in (REP, ADMIN):
        card = await ask(slack, channel, slack_api, f"lead {lead_id}", user)
        assert "Ravi Kumar" in card and "9876543210" in card
        assert "Ravi Kumar" in await ask(slack, channel, slack_api, "leads today", user)
    await ask(slack, channel, slack_api, f"lead {lead_id} contacted", REP)
    assert await _status(runtime, lead_id) == "contacted"
    form = desk_button_form(ADMIN, f"/esoteric lead {lead_id} won", slack_api.response_url())
    assert "marked won (was contacted)" in await _answer(slack, channel, slack_api, form)
    assert await _status(runtime, lead_id) == "won"


async def test_membership_is_read_once_a_minute_page_by_page(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    # Five members, two a page: the rep is on the last page.
    slack_api.members_page_size = 2
    slack_api.set_members(SALES, ["U0A", "U0B", "U0C", "U0D", REP])
    lead_id = await _lead(runtime)
    assert "Ravi Kumar" in await ask(slack, channel, slack_api, f"lead {lead_id}", REP)
    calls = slack_api.calls_to("conversations.members")
    assert [c.params["channel"] for c in calls] == [SALES] * 3
    assert "cursor" not in calls[0].params and calls[1].params["cursor"]
    # Within the minute: no more lookups, for the same rep or anyone else.
    assert "Ravi Kumar" in await ask(slack, channel, slack_api, "leads today", REP)
    assert "only for the sales team" in await ask(slack, channel, slack_api, "leads today", "U0Z")
    assert len(slack_api.calls_to("conversations.members")) == 3
    # Admins never need one.
    assert "Ravi Kumar" in await ask(slack, channel, slack_api, "leads today", ADMIN)
    assert len(slack_api.calls_to("conversations.members")) == 3


async def test_when_slack_cannot_say_who_is_a_member_lead_data_is_refused(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    lead_id = await _lead(runtime)
    slack_api.outage("conversations.members")
    answer = await ask(slack, channel, slack_api, f"lead {lead_id} lost", REP)
    assert "try again" in answer
    _no_customer_data(answer)
    slack_api.fail("conversations.members", "missing_scope")
    assert "try again" in await ask(slack, channel, slack_api, "leads today", REP)
    assert await _status(runtime, lead_id) == "new"
    assert await _audit(runtime, f"slack:{REP}") == [
        ("lead_status", "refused", f"lead:{lead_id}", "unverified"),
        ("leads_today", "refused", None, "unverified"),
    ]
    # A failure is not remembered: Slack answers again, the rep gets the lead.
    assert "Ravi Kumar" in await ask(slack, channel, slack_api, f"lead {lead_id}", REP)


@pytest.fixture
async def no_sales_channel(
    tmp_path: Path, slack_api: SlackStandIn
) -> AsyncIterator[tuple[Runtime, SlackChannel, SlackClient]]:
    """The bot with Slack but no ESOTERIC_SLACK_SALES_CHANNEL."""
    settings = load_settings(
        data_dir=tmp_path,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=slack_api.api_url,
        admins=f"slack:{ADMIN}",
    )
    async with open_runtime(settings, scheduler=False) as runtime:
        [slack] = [c for c in build_channels(runtime) if isinstance(c, SlackChannel)]
        await slack.start()
        try:
            transport = httpx.ASGITransport(app=create_app(runtime, [slack]))
            async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as http:
                yield runtime, slack, SlackClient(http)
        finally:
            await slack.stop()


async def test_without_a_sales_channel_only_admins_see_leads(
    no_sales_channel: tuple[Runtime, SlackChannel, SlackClient], slack_api: SlackStandIn
) -> None:
    runtime, channel, slack = no_sales_channel
    lead_id = await _lead(runtime)
    answer = await ask(slack, channel, slack_api, f"lead {lead_id}", REP)
    assert "only for the sales team" in answer
    _no_customer_data(answer)
    assert "Ravi Kumar" in await ask(slack, channel, slack_api, f"lead {lead_id}", ADMIN)
    assert slack_api.calls_to("conversations.members") == []


# -- replays -------------------------------------------------------------------------------------


async def _status_of(slack: SlackClient, body: bytes, headers: dict[str, str]) -> int:
    """Post exactly these bytes with exactly these headers (a captured request, resent)."""
    return (await slack.http.post("/slack/events", content=body, headers=headers)).status_code


async def test_a_replayed_slash_command_is_refused_and_runs_nothing(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    lead_id = await _lead(runtime)
    body = urlencode(command_form(f"lead {lead_id} lost", REP, slack_api.response_url())).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
    assert await _status_of(slack, body, headers) == 200
    await channel.idle()
    assert await _status(runtime, lead_id) == "lost"
    async with runtime.db.transaction() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        lead.status = "contacted"  # someone changes it back meanwhile

    # The same signed request again, byte for byte, within the 5-minute window.
    assert await _status_of(slack, body, headers) == 401
    await channel.idle()
    assert len(slack_api.responses) == 1
    assert await _status(runtime, lead_id) == "contacted"


async def test_a_replayed_button_press_is_refused(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    lead_id = await _lead(runtime)
    form = desk_button_form(REP, f"/esoteric lead {lead_id} won", slack_api.response_url())
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
    assert await _status_of(slack, body, headers) == 200
    assert await _status_of(slack, body, headers) == 401
    await channel.idle()
    assert len(slack_api.responses) == 1
    assert [a[0] for a in await _audit(runtime, f"slack:{REP}")] == ["lead_status"]


async def test_an_event_delivered_twice_is_accepted_and_stored_once(
    slack: SlackClient, channel: SlackChannel, runtime: Runtime
) -> None:
    # Events API callbacks stay out of the replay check: Slack re-delivers them on purpose,
    # and the core deduplicates them by event_id.
    body = json.dumps(event("event_message_im.json")).encode()
    headers = {"Content-Type": "application/json", **sign(body)}
    assert await _status_of(slack, body, headers) == 200
    assert await _status_of(slack, body, headers) == 200
    await channel.idle()
    assert await stored_messages(runtime, direction="in") == 1


# -- what the channel shows about itself --------------------------------------------------------


def test_the_config_repr_shows_no_secret() -> None:
    config = SlackConfig(
        bot_token="xoxb-secret-bot-token",
        signing_secret="signing-secret-value",
        app_token="xapp-secret-app-token",
        sales_channel=SALES,
    )
    shown = repr(config)
    for secret in ("xoxb-secret-bot-token", "signing-secret-value", "xapp-secret-app-token"):
        assert secret not in shown
    assert SALES in shown

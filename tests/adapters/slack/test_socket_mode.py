"""Socket Mode: slack-bolt's aiohttp Socket Mode client against a stand-in WebSocket server, opened
through apps.connections.open on the stand-in Web API."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.slack import SlackChannel
from bot.channels import build_channels
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from core.errors import ChannelError, ConfigError
from core.loan import emi
from core.money import format_money
from tests.adapters.slack.conftest import APP_TOKEN, BOT_TOKEN, stored_messages
from tests.support.slack_server import SlackStandIn, sample


@pytest.fixture
async def socket_runtime(tmp_path: Path, slack_api: SlackStandIn) -> AsyncIterator[Runtime]:
    # No signing secret: Socket Mode needs only the bot and app tokens.
    settings = load_settings(
        data_dir=tmp_path,
        slack_bot_token=BOT_TOKEN,
        slack_app_token=APP_TOKEN,
        slack_api_url=slack_api.api_url,
    )
    async with open_runtime(settings, scheduler=False) as rt:
        yield rt


@pytest.fixture
async def socket_channel(socket_runtime: Runtime) -> AsyncIterator[SlackChannel]:
    [channel] = build_channels(socket_runtime)
    assert isinstance(channel, SlackChannel)
    assert channel.router() is None  # no HTTP route in Socket Mode
    await channel.start()
    try:
        yield channel
    finally:
        await channel.stop()


def dm_envelope(envelope_id: str, text: str, retry_attempt: int = 0) -> dict[str, Any]:
    envelope = copy.deepcopy(sample("socket_envelope_events_api.json"))
    envelope["envelope_id"] = envelope_id
    envelope["retry_attempt"] = retry_attempt
    im = sample("event_message_im.json")
    im["event"]["text"] = text
    envelope["payload"] = im
    return envelope


async def _acked(slack_api: SlackStandIn, envelope_id: str) -> dict[str, Any]:
    await slack_api.wait_until(
        lambda: any(a.get("envelope_id") == envelope_id for a in slack_api.acks),
        f"the ack of {envelope_id}",
    )
    return next(a for a in slack_api.acks if a.get("envelope_id") == envelope_id)


async def test_socket_mode_dm_is_acknowledged_and_answered_once(
    socket_channel: SlackChannel, slack_api: SlackStandIn, socket_runtime: Runtime
) -> None:
    [opened] = slack_api.calls_to("apps.connections.open")
    assert opened.token == APP_TOKEN
    assert (await socket_channel.check())[0]

    first = dm_envelope("env-1", "what is the rate on a personal loan?")
    await slack_api.push(first)
    await _acked(slack_api, "env-1")
    await socket_channel.idle()
    [post] = slack_api.posts()
    assert post["channel"] == "D0DMCHAN01"
    personal = socket_runtime.catalogue.get("personal")
    assert f"{personal.annual_rate.normalize():f}%" in post["text"]

    # Slack redelivers the same event (a new envelope, retry_attempt 1): no second reply.
    await slack_api.push(dm_envelope("env-2", "what is the rate on a personal loan?", 1))
    await _acked(slack_api, "env-2")
    await socket_channel.idle()
    assert len(slack_api.posts()) == 1
    event_id = first["payload"]["event_id"]
    assert await stored_messages(socket_runtime, platform_event_id=event_id) == 1


async def test_socket_mode_slash_command(
    socket_channel: SlackChannel, slack_api: SlackStandIn
) -> None:
    envelope = copy.deepcopy(sample("socket_envelope_slash_command.json"))
    envelope["payload"].update(
        command="/esoteric", text="emi 500000 10.5 60", response_url=slack_api.response_url()
    )
    await slack_api.push(envelope)
    ack = await _acked(slack_api, envelope["envelope_id"])
    assert "payload" not in ack  # acknowledged at once, empty
    await socket_channel.idle()
    [(_, body)] = slack_api.responses
    expected = format_money(emi(Decimal(500000), Decimal("10.5"), 60), "INR", paise=True)
    assert body["response_type"] == "ephemeral" and expected in body["text"]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"slack_bot_token": BOT_TOKEN}, "SLACK_SIGNING_SECRET"),
        ({"slack_signing_secret": "s"}, "SLACK_BOT_TOKEN"),
    ],
)
async def test_half_configured_slack_is_a_clear_error(
    tmp_path: Path, given: dict[str, str], named: str
) -> None:
    async with open_runtime(load_settings(data_dir=tmp_path, **given), scheduler=False) as rt:
        with pytest.raises(ConfigError) as caught:
            build_channels(rt)
    assert caught.value.setting == named


async def test_a_bad_bot_token_stops_start_with_a_clear_error(
    socket_runtime: Runtime, slack_api: SlackStandIn
) -> None:
    [channel] = build_channels(socket_runtime)
    slack_api.fail("auth.test", "invalid_auth")
    with pytest.raises(ChannelError, match="invalid_auth"):
        await channel.start()
    assert slack_api.calls_to("apps.connections.open") == []

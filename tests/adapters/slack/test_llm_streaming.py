"""The sales persona with the LLM agent: a Groq stand-in streams the answer, and Slack shows it by
posting then updating, ending with exactly the reply the database holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from adapters.slack import SlackChannel
from adapters.slack.render import render
from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from core.messages import Reply
from core.store.models import Message
from tests.adapters.slack.conftest import BOT_TOKEN, SECRET, SlackClient, event
from tests.support.groq_server import GroqStandIn, text
from tests.support.slack_server import SlackStandIn


@pytest.fixture
async def llm_slack(
    tmp_path: Path, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> AsyncIterator[tuple[SlackClient, SlackChannel, Runtime]]:
    settings = load_settings(
        data_dir=tmp_path,
        groq_api_key="gsk_FakeKeyForLocalTestsOnly",
        groq_base_url=groq_server.base_url,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=slack_api.api_url,
    )
    async with open_runtime(settings, scheduler=False) as runtime:
        [channel] = build_channels(runtime)
        assert isinstance(channel, SlackChannel)
        await channel.start()
        try:
            app = create_app(runtime, [channel])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                yield SlackClient(http), channel, runtime
        finally:
            await channel.stop()


async def test_llm_answer_is_streamed_into_one_slack_message(
    llm_slack: tuple[SlackClient, SlackChannel, Runtime],
    slack_api: SlackStandIn,
    groq_server: GroqStandIn,
) -> None:
    slack, channel, runtime = llm_slack
    answer = (
        "Salaried applicants need PAN and Aadhaar, recent salary slips and bank statements. "
        "Self-employed applicants add income tax returns."
    )
    groq_server.script(text(answer))
    body = event("event_message_im.json", text="What documents does a home loan need?")
    assert (await slack.event(body)).status_code == 200
    await channel.idle()  # the turn, its streamed delivery included, has finished

    # The model was briefed as the sales team's assistant, not the customer one.
    system = groq_server.requests[0].messages[0]["content"]
    assert "sales team" in system

    [post] = slack_api.posts()
    updates = slack_api.calls_to("chat.update")
    assert post["channel"] == "D0DMCHAN01" and updates
    assert {u.params["ts"] for u in updates} == {slack_api.messages[0]["ts"]}
    async with runtime.db.transaction() as session:
        out = await session.scalar(select(Message).where(Message.direction == "out"))
    assert out is not None and out.status == "sent"
    # The message left on screen is exactly the persisted reply.
    expected = render(Reply(out.text))[0].blocks[0]
    assert updates[-1].params["blocks"][0] == expected


async def test_the_first_post_and_every_update_show_only_checked_text(
    llm_slack: tuple[SlackClient, SlackChannel, Runtime],
    slack_api: SlackStandIn,
    groq_server: GroqStandIn,
) -> None:
    slack, channel, _ = llm_slack
    answer = (
        "Happy to help. Call our manager on 9123456780 today. You are definitely approved for "
        "this loan. The rate starts at 8.5%. Anything else?"
    )
    groq_server.script(text(answer, token_delay=0.03))
    body = event("event_message_im.json", text="Can my customer get a home loan?")
    assert (await slack.event(body)).status_code == 200
    await channel.idle()
    shown = [str(p) for p in slack_api.posts()]
    shown += [str(u.params) for u in slack_api.calls_to("chat.update")]
    assert len(shown) > 1, "the answer was posted, then updated"
    for payload in shown:
        assert "9123456780" not in payload
        assert "definitely approved" not in payload

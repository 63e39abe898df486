"""The Events API end to end: signed HTTP deliveries through slack-bolt, the core and SQLite, with
replies landing on the stand-in Slack Web API."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from adapters.slack import SlackChannel
from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from core.money import format_money
from core.salesdesk import CATALOGUE_SOURCE
from core.store.database import create_database
from core.store.models import Message, MessageStatus
from core.store.schema import upgrade_to_head
from tests.adapters.slack.conftest import (
    BOT_TOKEN,
    SECRET,
    SlackClient,
    event,
    stored_messages,
)
from tests.support.slack_server import BOT_USER, SlackStandIn, sample


def _section_text(post: dict[str, object]) -> str:
    blocks = post["blocks"]
    assert isinstance(blocks, list)
    return "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section")


def _context_text(post: dict[str, object]) -> str:
    blocks = post["blocks"]
    assert isinstance(blocks, list)
    return "\n".join(e["text"] for b in blocks if b["type"] == "context" for e in b["elements"])


async def test_dm_product_question_gets_a_cited_answer(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    body = event("event_message_im.json", text="What's the processing fee on a car loan?")
    response = await slack.event(body)
    assert response.status_code == 200
    await channel.idle()

    posts = slack_api.posts()
    assert len(posts) == 1
    post = posts[0]
    assert post["channel"] == "D0DMCHAN01"
    assert "thread_ts" not in post  # a DM is answered in the DM itself
    car = runtime.catalogue.get("car")
    text = _section_text(post)
    assert f"*{car.name}*" in text  # **bold** became Slack's *bold*
    assert f"{car.processing_fee_percent.normalize():f}%" in text
    assert format_money(car.processing_fee_cap, runtime.catalogue.currency) in text
    assert CATALOGUE_SOURCE in _context_text(post)  # the cited source

    async with runtime.db.transaction() as session:
        rows = (await session.scalars(select(Message).order_by(Message.id))).all()
    assert [(m.direction, m.status) for m in rows] == [
        ("in", MessageStatus.ANSWERED),
        ("out", MessageStatus.SENT),
    ]
    assert rows[0].platform_event_id == body["event_id"]
    assert rows[1].meta["citations"][0]["source"] == CATALOGUE_SOURCE
    # users.info gave the rep's name to the core.
    assert [c.params["user"] for c in slack_api.calls_to("users.info")] == ["U0HUMAN001"]


async def test_channel_mention_is_answered_in_a_thread_and_follow_ups_continue_it(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    mention = event(
        "event_app_mention.json", text=f"<@{BOT_USER}> interest rate on a home loan &amp; fees?"
    )
    assert (await slack.event(mention)).status_code == 200
    await channel.idle()
    [post] = slack_api.posts()
    thread = mention["event"]["ts"]
    assert post["channel"] == "C0CHANNEL01" and post["thread_ts"] == thread
    home = runtime.catalogue.get("home")
    assert f"{home.annual_rate.normalize():f}% p.a." in _section_text(post)
    async with runtime.db.transaction() as session:
        first = await session.scalar(select(Message).where(Message.direction == "in"))
    assert first is not None and first.text == "interest rate on a home loan & fees?"

    # A follow-up in the same thread, without a mention, reaches the same conversation.
    follow_up = event(
        "event_message_in_thread.json", text="and for a personal loan?", thread_ts=thread
    )
    assert (await slack.event(follow_up)).status_code == 200
    await channel.idle()
    posts = slack_api.posts()
    assert len(posts) == 2 and posts[1]["thread_ts"] == thread
    assert runtime.catalogue.get("personal").name in _section_text(posts[1])


async def test_thread_follow_up_is_checked_with_conversations_replies(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    # A thread the bot answered in before this process started: known only to Slack.
    slack_api.add_message("C0CHANNEL01", "1767225000.000100", "U0HUMAN001")
    slack_api.add_message("C0CHANNEL01", "1767225001.000200", BOT_USER, "1767225000.000100")
    # And a thread of people only.
    slack_api.add_message("C0CHANNEL01", "1767225100.000100", "U0HUMAN001")
    joined = event(
        "event_message_in_thread.json", text="home loan tenure?", thread_ts="1767225000.000100"
    )
    other = event(
        "event_message_in_thread.json",
        text="home loan tenure?",
        thread_ts="1767225100.000100",
        ts="1767225200.000300",
    )
    other["event_id"] = "Ev0OTHER0001"
    assert (await slack.event(joined)).status_code == 200
    assert (await slack.event(other)).status_code == 200
    await channel.idle()

    assert sorted(c.params["ts"] for c in slack_api.calls_to("conversations.replies")) == [
        "1767225000.000100",
        "1767225100.000100",
    ]
    posts = slack_api.posts()
    assert [p["thread_ts"] for p in posts] == ["1767225000.000100"]
    assert await stored_messages(runtime, platform_event_id="Ev0OTHER0001") == 0

    # More chatter in the people-only thread costs no further lookup and gets no answer...
    again = event(
        "event_message_in_thread.json", text="ok", thread_ts="1767225100.000100", ts="1767225300.1"
    )
    again["event_id"] = "Ev0OTHER0002"
    assert (await slack.event(again)).status_code == 200
    await channel.idle()
    assert len(slack_api.calls_to("conversations.replies")) == 2 and len(slack_api.posts()) == 1
    # ...until someone mentions the bot there; from then on the thread is the bot's.
    mention = event(
        "event_app_mention.json",
        text=f"<@{BOT_USER}> home loan?",
        thread_ts="1767225100.000100",
        ts="1767225400.000100",
    )
    mention["event_id"] = "Ev0MENTION03"
    later = event(
        "event_message_in_thread.json", text="car loan?", thread_ts="1767225100.000100",
        ts="1767225500.000100",
    )  # fmt: skip
    later["event_id"] = "Ev0LATER0004"
    assert (await slack.event(mention)).status_code == 200
    await channel.idle()
    assert (await slack.event(later)).status_code == 200
    await channel.idle()
    assert [p["thread_ts"] for p in slack_api.posts()[1:]] == ["1767225100.000100"] * 2
    assert len(slack_api.calls_to("conversations.replies")) == 2


async def test_own_other_bots_edits_and_top_level_chatter_are_ignored(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    own = sample("event_message_from_self_bot.json")
    other_bot = event(
        "event_message_im.json", bot_id="B0OTHERBOT1", subtype="bot_message", text="beep"
    )
    other_bot["event_id"] = "Ev0BOT000002"
    edited = event("event_message_im.json", subtype="message_changed")
    edited["event_id"] = "Ev0EDIT00003"
    deleted = event("event_message_im.json", subtype="message_deleted")
    deleted["event_id"] = "Ev0DEL000004"
    chatter = event("event_message_in_thread.json", channel_type="channel")
    del chatter["event"]["thread_ts"]
    chatter["event_id"] = "Ev0CHAT00005"
    for body in (own, other_bot, edited, deleted, chatter):
        assert (await slack.event(body)).status_code == 200
    await channel.idle()
    assert slack_api.posts() == []
    assert await stored_messages(runtime) == 0


async def test_slack_is_acknowledged_before_the_reply_is_written(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn
) -> None:
    release = slack_api.hold("chat.postMessage")
    # If the listener waited for the turn, this request could not finish while the reply is
    # held inside the Web API; the timeout only turns such a deadlock into a failure.
    response = await asyncio.wait_for(
        slack.event(event("event_message_im.json", text="home loan")), 10
    )
    assert response.status_code == 200
    await slack_api.wait_until(lambda: bool(slack_api.posts()), "the held reply")
    assert not release.is_set()
    release.set()
    await channel.idle()
    assert len(slack_api.posts()) == 1


async def test_retried_event_gets_exactly_one_reply(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    body = event("event_message_im.json", text="personal loan rate?")
    assert (await slack.event(body)).status_code == 200
    await channel.idle()
    for attempt in (1, 2):
        assert (await slack.event(body, retry=attempt)).status_code == 200
    await channel.idle()
    assert len(slack_api.posts()) == 1
    assert await stored_messages(runtime, platform_event_id=body["event_id"]) == 1
    assert await stored_messages(runtime, direction="out") == 1


async def test_retry_of_an_event_never_stored_is_processed(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    body = event("event_message_im.json", text="business loan limits?")
    # The first delivery never reached us; Slack's retry carries X-Slack-Retry-Num: 1.
    assert (await slack.event(body, retry=1)).status_code == 200
    await channel.idle()
    assert len(slack_api.posts()) == 1
    assert await stored_messages(runtime, platform_event_id=body["event_id"]) == 1


async def test_bad_signature_and_stale_timestamp_get_401_and_store_nothing(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    body = json.dumps(event("event_message_im.json", text="home loan")).encode()
    wrong = await slack.post(body, secret="not-the-signing-secret")
    stale = await slack.post(body, timestamp=int(time.time()) - 301)
    unsigned = await slack.http.post(
        "/slack/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert [r.status_code for r in (wrong, stale, unsigned)] == [401, 401, 401]
    await channel.idle()
    assert await stored_messages(runtime) == 0
    assert slack_api.posts() == []


async def test_malformed_bodies_get_400(
    slack: SlackClient, channel: SlackChannel, runtime: Runtime
) -> None:
    cases = [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"payload=%7Bbroken", "application/x-www-form-urlencoded"),
        (b"just=fields", "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "application/json"),
        (b"hello", "text/plain"),
    ]
    for body, content_type in cases:
        response = await slack.post(body, content_type)
        assert response.status_code == 400, body
        assert response.json()["error"]
    assert await stored_messages(runtime) == 0


async def test_url_verification_returns_the_challenge(slack: SlackClient) -> None:
    body = sample("url_verification.json")
    response = await slack.event(body)
    assert response.status_code == 200
    assert response.json()["challenge"] == body["challenge"]


async def test_rate_limited_post_is_retried_after_retry_after(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    slack_api.rate_limit("chat.postMessage", retry_after=1)
    assert (await slack.event(event("event_message_im.json", text="car loan"))).status_code == 200
    await channel.idle()
    attempts = slack_api.calls_to("chat.postMessage")
    assert len(attempts) == 2
    assert attempts[0].params == attempts[1].params
    # The retry waited at least the Retry-After the 429 asked for.
    assert attempts[1].at - attempts[0].at >= 1.0
    assert await stored_messages(runtime, direction="out", status=MessageStatus.SENT) == 1


async def test_refused_delivery_is_recorded_as_failed(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    slack_api.fail("chat.postMessage", "channel_not_found")
    assert (await slack.event(event("event_message_im.json", text="home loan"))).status_code == 200
    await channel.idle()
    assert await stored_messages(runtime, direction="out", status=MessageStatus.FAILED) == 1


@pytest.mark.postgres
async def test_retried_event_gets_one_reply_on_postgres(
    tmp_path: Path, postgres_url: str, slack_api: SlackStandIn
) -> None:
    db = create_database(postgres_url)
    await upgrade_to_head(db)  # a shared database is migrated on purpose
    await db.dispose()
    settings = load_settings(
        data_dir=tmp_path,
        database_url=postgres_url,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=slack_api.api_url,
    )
    async with open_runtime(settings, scheduler=False) as runtime:
        [channel] = build_channels(runtime)
        assert isinstance(channel, SlackChannel)
        await channel.start()
        try:
            transport = httpx.ASGITransport(app=create_app(runtime, [channel]))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                slack = SlackClient(http)
                body = event("event_message_im.json", text="education loan rate?")
                # The first delivery and two retries race each other.
                responses = await asyncio.gather(
                    slack.event(body), slack.event(body, retry=1), slack.event(body, retry=2)
                )
                assert [r.status_code for r in responses] == [200, 200, 200]
                await channel.idle()
        finally:
            await channel.stop()
        assert len(slack_api.posts()) == 1
        assert await stored_messages(runtime, platform_event_id=body["event_id"]) == 1


async def test_an_event_is_acknowledged_only_once_stored(
    slack: SlackClient, channel: SlackChannel, slack_api: SlackStandIn, runtime: Runtime
) -> None:
    """While the database cannot store the message, Slack gets an error (and delivers the event
    again); the redelivery is stored, acknowledged and answered once."""
    assert runtime.db.is_sqlite
    database = runtime.settings.resolved_database_url.split("///", 1)[1]
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    body = event("event_message_im.json", text="What's the processing fee on a car loan?")
    try:
        refused = await slack.event(body)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert refused.status_code >= 500
    assert await stored_messages(runtime) == 0
    again = await slack.event(body, retry=1)
    assert again.status_code == 200
    assert await stored_messages(runtime, platform_event_id=body["event_id"]) == 1
    await channel.idle()
    assert len(slack_api.posts()) == 1

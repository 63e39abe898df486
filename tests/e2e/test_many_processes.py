"""Three real ``esoteric serve`` processes on one Postgres and Redis, driven the way Telegram,
Slack and a website drive a deployment behind a load balancer: deliveries spread across the
processes, a delivery a process does not answer goes to another. One process is SIGKILLed in
the middle of the burst and started again. Everything is read back from SQL and the stand-ins.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text

from core.agent.base import TurnContext
from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ServiceConfig
from core.store.database import Database
from core.store.models import Handoff
from tests.support.cluster import (
    SALES,
    Cluster,
    Sender,
    cluster_env,
    echo_model,
    peak_rss_mib,
    tokens_in,
)
from tests.support.groq_server import GroqStandIn
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


async def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def settled(db: Database, within: float = 90.0) -> None:
    """Every stored message answered, nothing left to send."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        left = await rows(
            db,
            "SELECT (SELECT count(*) FROM messages WHERE status = 'received'),"
            " (SELECT count(*) FROM outbox WHERE status = 'pending')",
        )
        if left[0] == (0, 0):
            return
        if loop.time() > deadline:
            raise AssertionError(f"never settled: {left[0]} unanswered / unsent")
        await asyncio.sleep(0.2)


def signature(words: str) -> str:
    """A reply as text, whatever the platform's markup did to it."""
    return re.sub(r"[^0-9A-Za-z]+", "", html.unescape(words))


def conversation_script(chat: int, count: int) -> list[str]:
    """A customer who keeps asking for quotes: each reply depends on the ones before it (the
    scripted agent's state), so a reply out of order, twice or missing shows in the text."""
    flow = itertools.cycle(["I need a home loan", "{} lakh", "{} years", "{} a month", "no"])
    said = []
    for n in range(count):
        step = next(flow)
        value = {"{} lakh": 20 + (chat + n) % 30, "{} years": 5 + (chat + n) % 25}.get(step)
        if step == "{} a month":
            value = 90_000 + 1_000 * ((chat * 7 + n) % 50)
        said.append(step.format(value) if "{}" in step else step)
    return said


async def expected_replies(said: list[str], channel: str) -> list[str]:
    """What the scripted agent answers to ``said``, in order, through no database at all."""
    agent = ScriptedAgent(load_catalogue())
    persona = ServiceConfig().personas.get(channel, "customer")
    state: dict[str, Any] = {}
    replies = []
    for words in said:
        result = await agent.respond(
            TurnContext(
                conversation_id=0, channel=channel, text=words, state=state, persona=persona
            )
        )
        replies.append(result.reply.text)
        state = result.state
    return replies


def first_difference(expected: list[tuple[str, bool]], seen: list[str]) -> str:
    for n, ((reply, maybe), shown) in enumerate(zip(expected, seen, strict=False)):
        if reply != shown:
            pairs = zip(reply + " ", shown + " ", strict=False)
            at = next(i for i, (a, b) in enumerate(pairs) if a != b)
            return (
                f"#{n} from character {at}: expected {reply[at - 10 : at + 50]!r} "
                f"(maybe: {maybe}), shown {shown[at - 10 : at + 50]!r}"
            )
    return f"{len(expected)} expected, {len(seen)} shown"


def delivered_in_order(expected: list[tuple[str, bool]], seen: list[str]) -> bool:
    """Whether ``seen`` is ``expected`` in order, where an entry marked True (a reply a killed
    process was sending: it may or may not have arrived) may be missing, and nothing appears
    twice."""
    memo: dict[tuple[int, int], bool] = {}

    def fits(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if i == len(expected):
                memo[(i, j)] = j == len(seen)
            else:
                reply, maybe = expected[i]
                here = j < len(seen) and seen[j] == reply and fits(i + 1, j + 1)
                memo[(i, j)] = here or (maybe and fits(i + 1, j))
        return memo[(i, j)]

    return fits(0, 0)


async def test_three_processes_and_a_kill_answer_every_message_once_in_order(
    tmp_path: Path,
    postgres_url: str,
    migrated: Database,
    redis_url: str,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
) -> None:
    db = migrated
    # The scripted agent answers (no GROQ_API_KEY): its replies are deterministic.
    env = cluster_env(
        database_url=postgres_url,
        redis_url=redis_url,
        telegram_api=telegram_api.base_url,
        slack_api=slack_api.api_url,
        groq_url=None,
    )
    cluster = Cluster(tmp_path, env)
    sender = Sender(cluster)
    per_chat = 50
    telegram_chats = [7_000 + i for i in range(8)]
    slack_chats = [(f"D0MANY{i:04d}", f"U0MANY{i:04d}") for i in range(6)]
    try:
        await cluster.start_all()
        web_chats = [await sender.new_session(i % 3) for i in range(6)]

        # A customer waiting for an advisor past the SLA: every process's timer sees it due.
        waiting_chat = 7_999
        await sender.telegram(0, telegram_api.next_update_id(), waiting_chat, "hello")
        await settled(db)
        (conversation_id,) = (
            await rows(db, "SELECT id FROM conversations WHERE chat_key = :c", c=str(waiting_chat))
        )[0]
        card_ts = "1767225000.000100"
        past = datetime.now(UTC) - timedelta(minutes=30)
        async with db.transaction() as session:
            await session.execute(
                insert(Handoff).values(
                    conversation_id=conversation_id,
                    reason="human",
                    status="waiting",
                    requested_at=past,
                    card_channel=SALES,
                    card_ts=card_ts,
                    sla_due_at=past + timedelta(minutes=10),
                    last_activity_at=past,
                )
            )

        scripts: dict[str, list[str]] = {}
        total = per_chat * (len(telegram_chats) + len(slack_chats) + len(web_chats))
        web_replies: dict[str, dict[str, str]] = {}

        async def telegram_chat(n: int, chat: int) -> None:
            said = scripts[str(chat)] = conversation_script(n, per_chat)
            for k, words in enumerate(said):
                await sender.telegram((n + k) % 3, telegram_api.next_update_id(), chat, words)

        async def slack_chat(n: int, channel: str, user: str) -> None:
            said = scripts[channel] = conversation_script(100 + n, per_chat)
            for k, words in enumerate(said):
                await sender.slack((n + k) % 3, channel, user, words)

        async def web_chat(n: int, session: str) -> None:
            said = scripts[session] = conversation_script(200 + n, per_chat)
            answers = web_replies[session] = {}

            async def one(k: int, words: str) -> None:
                result = await sender.api((n + k) % 3, session, words, f"c{k}")
                answers[f"c{k}"] = str(result["reply"])

            # In order: each waits for the previous one's acknowledgement... which for the API
            # is its reply, so the burst is the six sessions at once.
            for k, words in enumerate(said):
                await one(k, words)

        async def killer() -> None:
            # Mid-burst: once 40% of the messages are in (polled: acks have no event).
            while len(sender.acked) < total * 0.4:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            cluster.kill(1)
            await cluster.wait_dead(1)
            await asyncio.sleep(1.0)
            await cluster.start(1)

        await asyncio.gather(
            killer(),
            *(telegram_chat(n, chat) for n, chat in enumerate(telegram_chats)),
            *(slack_chat(n, ch, user) for n, (ch, user) in enumerate(slack_chats)),
            *(web_chat(n, session) for n, session in enumerate(web_chats)),
        )
        await settled(db)
        # Handoff timers run every 5 s in each process: long enough for several ticks each.
        await asyncio.sleep(12)
    finally:
        await sender.aclose()
        await cluster.stop_all()
    logs = cluster.logs()

    # Nothing acknowledged that was not stored.
    stored = {
        (r.channel, r.platform_event_id)
        for r in await rows(db, "SELECT channel, platform_event_id FROM messages")
    }
    assert set(sender.acked) <= stored
    # Every stored message answered, exactly once.
    inbound = await rows(
        db,
        "SELECT m.id, m.status, c.chat_key, m.text FROM messages m"
        " JOIN conversations c ON c.id = m.conversation_id WHERE m.direction = 'in'"
        " ORDER BY m.id",
    )
    assert len(inbound) == total + 1
    assert {r.status for r in inbound} == {"answered"}
    replies = await rows(
        db,
        "SELECT m.id, m.reply_to_id, c.chat_key, m.text, o.status FROM messages m"
        " JOIN conversations c ON c.id = m.conversation_id"
        " JOIN outbox o ON o.message_id = m.id"
        " WHERE m.direction = 'out' AND m.author = 'bot' AND o.kind = 'reply' ORDER BY m.id",
    )
    assert sorted(r.reply_to_id for r in replies) == [r.id for r in inbound]
    # In each chat: stored in the order sent, answered in that order, with the replies the
    # conversation implies (a reply out of order or twice would change every one after it).
    for chat, said in scripts.items():
        chat_inbound = [r for r in inbound if r.chat_key == chat]
        assert [r.text for r in chat_inbound] == said, chat
        chat_replies = [r for r in replies if r.chat_key == chat]
        assert [r.reply_to_id for r in chat_replies] == [r.id for r in chat_inbound], chat
        channel = "web" if chat in web_replies else "slack" if chat.startswith("D") else "telegram"
        expected = await expected_replies(said, channel)
        assert [r.text for r in chat_replies] == expected, chat
    # Delivered once each, in order. A reply a killed process was sending when it died
    # ("sending", later "unknown") may or may not have arrived, and is never sent again.
    maybe = {"sending", "unknown"}
    assert {r.status for r in replies} <= {"sent"} | maybe
    ambiguous = [r for r in replies if r.status in maybe]
    assert len(ambiguous) <= 16  # at most the killed process's turns in flight
    for chat in telegram_chats:
        sent = [(signature(r.text), r.status in maybe) for r in replies if r.chat_key == str(chat)]
        # What the chat shows (the HTML parsed), in the order the messages were sent.
        seen = [signature(t) for t in telegram_api.visible(chat)]
        assert len(telegram_api.texts(chat)) == len(seen)
        assert delivered_in_order(sent, seen), (chat, first_difference(sent, seen))
    for channel, _ in slack_chats:
        sent = [(signature(r.text), r.status in maybe) for r in replies if r.chat_key == channel]
        seen = [
            # The fallback text ends with the reply's sources, which the stored text has apart.
            signature(str(p["text"]).split("\nSources:")[0].split("Sources:")[0])
            for p in slack_api.posts()
            if p.get("channel") == channel and not p.get("thread_ts")
        ]
        assert delivered_in_order(sent, seen), (channel, first_difference(sent, seen))
    for session, answers in web_replies.items():
        expected = await expected_replies(scripts[session], "web")
        assert [answers[f"c{k}"] for k in range(per_chat)] == expected
    # The handoff reminder went out once, though three processes ran the timers.
    reminders = [
        p for p in slack_api.posts() if p.get("thread_ts") == card_ts and "Reminder" in p["text"]
    ]
    assert len(reminders) == 1
    waits = [t for t in telegram_api.texts(waiting_chat) if "Thanks for waiting" in t]
    assert len(waits) == 1
    # The database pool was never exhausted, and no turn failed.
    assert "no connection free" not in logs and "QueuePool" not in logs
    assert '"turn failed"' not in logs
    assert sender.refused > 0  # the kill did land mid-burst
    # Deliveries refused by the killed process (dead, or starting again: 503) went to another
    # process; no other server errors.
    assert [e for e in sender.server_errors if (e[0], e[2]) != (1, 503)] == []


async def test_slow_model_and_simultaneous_deliveries_keep_each_chat_in_order(
    tmp_path: Path,
    postgres_url: str,
    migrated: Database,
    redis_url: str,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
) -> None:
    """A model taking 0.3-0.6 s, and each chat's five messages posted at once to different
    processes (Telegram's parallel webhook connections behind a load balancer)."""
    db = migrated
    groq = GroqStandIn(on_request=echo_model(lambda: random.uniform(0.3, 0.6)))
    await groq.start()
    env = cluster_env(
        database_url=postgres_url,
        redis_url=redis_url,
        telegram_api=telegram_api.base_url,
        slack_api=slack_api.api_url,
        groq_url=groq.base_url,
    )
    cluster = Cluster(tmp_path, env)
    sender = Sender(cluster)
    chats = [8_000 + i for i in range(20)]
    try:
        await cluster.start_all()
        for rounds in range(3):

            async def burst(n: int, chat: int, rounds: int = rounds) -> None:
                ids = [telegram_api.next_update_id() for _ in range(5)]
                await asyncio.gather(
                    *(
                        sender.telegram(
                            (n + k) % 3, ids[k], chat, f"about m{chat}-{rounds * 5 + k}"
                        )
                        for k in range(5)
                    )
                )

            await asyncio.gather(*(burst(n, chat) for n, chat in enumerate(chats)))
        await settled(db, within=120)
    finally:
        await sender.aclose()
        await cluster.stop_all()
        await groq.stop()
    assert sender.server_errors == []
    assert sender.refused == 0, sender.transport_errors[:5]
    for chat in chats:
        inbound = await rows(
            db,
            "SELECT m.text FROM messages m JOIN conversations c ON c.id = m.conversation_id"
            " WHERE m.direction = 'in' AND c.chat_key = :c ORDER BY m.id",
            c=str(chat),
        )
        stored_order = tokens_in([r.text for r in inbound])
        assert sorted(stored_order) == sorted(f"m{chat}-{k}" for k in range(15))
        # Each reply names the messages it answers: in the order they were stored.
        shown = tokens_in(telegram_api.visible(chat))
        assert shown == stored_order, chat
    # No turn ran twice: the model saw each message as the newest exactly once.
    asked = [
        tokens_in([str(next(m for m in reversed(r.messages) if m["role"] == "user")["content"])])
        for r in groq.requests
    ]
    flat = [t for tokens in asked for t in tokens]
    assert len(flat) == len(set(flat)) == 20 * 15
    # Each request carried the conversation as the customer saw it: every earlier message
    # followed by the bot's answer to it, although later messages were queued before those
    # answers existed.
    for request in groq.requests:
        said = [
            m
            for m in request.messages
            if m["role"] in ("user", "assistant")
            # What the customer told us about themselves, fenced: not a turn of the history.
            and not str(m["content"]).startswith("<customer_context>")
        ]
        earlier, newest = said[:-1], said[-1]
        assert newest["role"] == "user"
        asked_before = [tokens_in([str(m["content"])]) for m in earlier if m["role"] == "user"]
        answers = [tokens_in([str(m["content"])]) for m in earlier if m["role"] == "assistant"]
        assert answers == asked_before, [m["content"] for m in said]


async def test_two_hundred_chats_with_a_slow_model_on_one_process(
    tmp_path: Path,
    postgres_url: str,
    migrated: Database,
    redis_url: str,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
) -> None:
    """200 chats at once, each turn waiting 2 s for the model: turns in flight are bounded, no
    connection is held while the model thinks, so the pool is never exhausted and memory
    stays bounded."""
    groq = GroqStandIn(on_request=echo_model(lambda: 2.0))
    await groq.start()
    env = cluster_env(
        database_url=postgres_url,
        redis_url=redis_url,
        telegram_api=telegram_api.base_url,
        slack_api=slack_api.api_url,
        groq_url=groq.base_url,
        extra={"ESOTERIC_LLM_TURN_DEADLINE_SECONDS": "30"},
    )
    cluster = Cluster(tmp_path, env, size=1)
    sender = Sender(cluster)
    peak_connections = 0
    try:
        await cluster.start_all()
        sessions = [await sender.new_session(0) for _ in range(200)]
        database = postgres_url.rsplit("/", 1)[1]

        async def watch_connections() -> None:
            nonlocal peak_connections
            while True:
                (count,) = (
                    await rows(
                        migrated,
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :d",
                        d=database,
                    )
                )[0]
                peak_connections = max(peak_connections, count)
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch_connections())
        results = await asyncio.gather(
            *(sender.api(0, s, f"hi m{n}-0", uuid.uuid4().hex) for n, s in enumerate(sessions))
        )
        watcher.cancel()
        node = cluster.nodes[0].process
        assert node is not None
        rss = peak_rss_mib(node.pid)
    finally:
        await sender.aclose()
        await cluster.stop_all()
        await groq.stop()
    assert [r["reply"] for r in results] == [f"ok m{n}-0" for n in range(200)]
    assert sender.server_errors == []
    logs = cluster.logs()
    assert "no connection free" not in logs and "QueuePool" not in logs
    # Turns in flight are bounded by ESOTERIC_WORKER_CONCURRENCY, connections by the pool:
    # the test's own and the watcher's connections count here too.
    assert peak_connections <= 30, peak_connections
    assert rss < 400, f"peak RSS {rss:.0f} MiB"

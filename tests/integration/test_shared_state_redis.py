"""Rate limits, fan-out and the send budget shared through the real Redis at 127.0.0.1:6379.

Two instances of a class stand for two bot processes. Each test works under its own key prefix
and deletes its keys afterwards. Redis is required: when it is down these tests fail, they do
not skip (CI has Redis)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from core.fanout import LocalFanOut, RedisFanOut, fanout_for
from core.ratelimit import RateLimits, SharedStateUnavailable
from core.sendbudget import BudgetLoad, RedisSendBudget
from tests.support.waiting import wait_until

REDIS_URL = os.environ.get("ESOTERIC_TEST_REDIS", "redis://127.0.0.1:6379/0")
NOBODY_LISTENS = "redis://127.0.0.1:1/0"

T = TypeVar("T")


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    await client.ping()  # no Redis: this test errors out rather than skipping
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    name = f"esoteric-test-{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{name}:*")]
        if keys:
            await redis.delete(*keys)


class Inbox:
    """A subscriber that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


# Rate limits


async def test_two_processes_share_one_rate_limit(prefix: str) -> None:
    first, second = RateLimits(REDIS_URL, prefix), RateLimits(REDIS_URL, prefix)
    try:
        assert await first.take("messages", "user-1", 3) == 0
        assert await second.take("messages", "user-1", 3) == 0
        assert await first.take("messages", "user-1", 3) == 0
        wait = await second.take("messages", "user-1", 3)
        assert 55 <= wait <= 60  # the first hit leaves the window in about a minute
        assert await first.take("messages", "user-1", 3) >= 1
        # Another key, another scope: separate limits.
        assert await second.take("messages", "user-2", 3) == 0
        assert await second.take("uploads", "user-1", 3) == 0
    finally:
        await first.aclose()
        await second.aclose()


async def test_in_memory_rate_limits_count_the_same_way() -> None:
    limits = RateLimits()
    try:
        assert [await limits.take("messages", "u", 2) for _ in range(3)][:2] == [0, 0]
        assert await limits.take("messages", "u", 2) >= 1
    finally:
        await limits.aclose()


async def test_unreachable_redis_is_a_clear_error() -> None:
    limits = RateLimits(NOBODY_LISTENS)
    budget = RedisSendBudget(NOBODY_LISTENS, rate=30)
    fanout = RedisFanOut(NOBODY_LISTENS)
    try:
        with pytest.raises(SharedStateUnavailable, match="rate limits unavailable"):
            await limits.take("messages", "u", 5)
        with pytest.raises(SharedStateUnavailable, match="send budget unavailable"):
            await budget.acquire("c", False)
        with pytest.raises(SharedStateUnavailable, match="fan-out unavailable"):
            await fanout.start()
        with pytest.raises(SharedStateUnavailable, match="fan-out unavailable"):
            await fanout.publish("t", {"n": 1})
    finally:
        await limits.aclose()
        await budget.aclose()
        await fanout.aclose()


# Fan-out


@pytest.fixture
async def two_fanouts(prefix: str) -> AsyncIterator[tuple[RedisFanOut, RedisFanOut]]:
    first, second = RedisFanOut(REDIS_URL, prefix), RedisFanOut(REDIS_URL, prefix)
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_message_reaches_the_other_process_in_order(
    two_fanouts: tuple[RedisFanOut, RedisFanOut],
) -> None:
    publisher, holder = two_fanouts
    inbox = Inbox()
    await holder.subscribe("conversation-1", inbox)
    for n in range(200):
        await publisher.publish("conversation-1", {"n": n, "text": "héllo"})
    await wait_until(lambda: len(inbox.messages) == 200, what="200 messages delivered")
    assert inbox.messages == [{"n": n, "text": "héllo"} for n in range(200)]


async def test_closing_a_subscription_stops_its_delivery(
    redis: Redis, prefix: str, two_fanouts: tuple[RedisFanOut, RedisFanOut]
) -> None:
    publisher, holder = two_fanouts
    leaving, staying = Inbox(), Inbox()
    subscription = await holder.subscribe("t", leaving)
    last = await holder.subscribe("t", staying)
    await publisher.publish("t", {"n": 1})
    await wait_until(lambda: len(leaving.messages) == 1, what="first message")
    await subscription.close()
    await publisher.publish("t", {"n": 2})
    await wait_until(lambda: len(staying.messages) == 2, what="second message")
    assert leaving.messages == [{"n": 1}]  # dispatch is in order: it would have had it by now
    # The last local subscriber gone, the process leaves the channel.
    await last.close()
    channel = f"{prefix}:fanout:t"
    await wait_until_async(lambda: _subscribers_of(redis, channel), lambda n: n == 0)


async def test_a_failing_subscriber_does_not_stop_the_others(
    two_fanouts: tuple[RedisFanOut, RedisFanOut], caplog: pytest.LogCaptureFixture
) -> None:
    publisher, holder = two_fanouts
    inbox = Inbox()

    async def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    await holder.subscribe("t", broken)
    await holder.subscribe("t", inbox)
    with caplog.at_level(logging.ERROR, logger="core.fanout"):
        for n in range(3):
            await publisher.publish("t", {"n": n})
        await wait_until(lambda: len(inbox.messages) == 3, what="messages past the broken one")
    assert inbox.messages == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert sum("subscriber bug" in (r.exc_text or "") for r in caplog.records) == 3


async def test_the_reader_survives_a_killed_connection(
    redis: Redis, prefix: str, two_fanouts: tuple[RedisFanOut, RedisFanOut]
) -> None:
    publisher, holder = two_fanouts
    inbox = Inbox()
    await holder.subscribe("t", inbox)
    killed = 0
    for client in await redis.client_list():
        if client["name"] == f"{prefix}:fanout" and client["sub"] != "0":
            killed += await redis.client_kill_filter(_id=client["id"])
    assert killed == 1
    await keep_publishing_until_heard(publisher, "t", inbox)


async def test_the_reader_reconnects_after_an_outage(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with FlakyProxy() as proxy:
        publisher = RedisFanOut(REDIS_URL, prefix)
        holder = RedisFanOut(proxy.url, prefix)
        await holder.start()
        inbox = Inbox()
        try:
            await holder.subscribe("t", inbox)
            with caplog.at_level(logging.INFO, logger="core.fanout"):
                await proxy.cut()  # connections dropped, new ones refused
                await wait_until(
                    lambda: any("lost Redis" in r.getMessage() for r in caplog.records),
                    what="the reader noticed",
                )
                await proxy.restore()
                await keep_publishing_until_heard(publisher, "t", inbox)
            assert any("reconnected" in r.getMessage() for r in caplog.records)
        finally:
            await holder.aclose()
            await publisher.aclose()


async def keep_publishing_until_heard(publisher: RedisFanOut, topic: str, inbox: Inbox) -> None:
    # Pub/sub is at most once: what is published while the subscriber's connection is down is
    # lost, so keep publishing until the re-subscribed reader hears one.
    async with asyncio.timeout(10):
        n = 0
        while not inbox.messages:
            await publisher.publish(topic, {"n": n})
            n += 1
            await asyncio.sleep(0.02)


class FlakyProxy:
    """A TCP relay to Redis on 127.0.0.1 that can drop every connection and refuse new ones."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    async def __aenter__(self) -> FlakyProxy:
        await self.restore()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cut()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._relays.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass  # the other side was cut
    finally:
        sink.close()


async def test_the_local_fanout_delivers_in_order_and_stops_on_close() -> None:
    fanout = fanout_for(None)
    assert isinstance(fanout, LocalFanOut)
    await fanout.start()
    first, second = Inbox(), Inbox()

    async def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    subscription = await fanout.subscribe("t", first)
    await fanout.subscribe("t", broken)
    await fanout.subscribe("t", second)
    await fanout.publish("t", {"n": 1})
    await subscription.close()
    await fanout.publish("t", {"n": 2})
    await fanout.publish("elsewhere", {"n": 3})
    assert first.messages == [{"n": 1}]
    assert second.messages == [{"n": 1}, {"n": 2}]
    await fanout.aclose()


# Send budget


@pytest.fixture
async def two_budgets(prefix: str) -> AsyncIterator[tuple[RedisSendBudget, RedisSendBudget]]:
    first = RedisSendBudget(REDIS_URL, rate=50, group_per_minute=3, prefix=prefix)
    second = RedisSendBudget(REDIS_URL, rate=50, group_per_minute=3, prefix=prefix)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def test_two_processes_share_the_global_rate(
    two_budgets: tuple[RedisSendBudget, RedisSendBudget],
) -> None:
    first, second = two_budgets
    started = time.monotonic()
    await asyncio.gather(
        *(first.acquire(f"c{n}", False) for n in range(50)),
        *(second.acquire(f"c{n}", False) for n in range(50)),
    )
    elapsed = time.monotonic() - started
    # 100 sends at 50/s: 99 intervals of 20 ms, about 2 s; two budgets of their own would take
    # 1 s. The upper bound only catches a budget that throttles far below its rate: a loaded
    # machine (tests running side by side) stretches the run by a second or two.
    assert 1.6 <= elapsed <= 6.0


async def test_backlog_grows_under_load(
    two_budgets: tuple[RedisSendBudget, RedisSendBudget],
) -> None:
    first, second = two_budgets
    assert await second.backlog() == 0.0
    sends = [asyncio.create_task(first.acquire("c", False)) for _ in range(25)]
    try:
        await wait_until_async(second.backlog, expected=lambda backlog: backlog > 0.3)
    finally:
        await asyncio.gather(*sends)
    assert await second.backlog() <= 0.02


async def test_load_shows_the_rate_in_use_without_a_gap_to_every_process(
    two_budgets: tuple[RedisSendBudget, RedisSendBudget],
) -> None:
    first, second = two_budgets
    assert await second.load() == BudgetLoad(0.0, 0.0)
    # 60 sends at 50/s: back to back for about 1.2 s, the last booked 1.18 s after the first.
    sends = [asyncio.create_task(first.acquire("c", False)) for _ in range(60)]
    try:
        await asyncio.sleep(0.7)
        load = await second.load()
        assert 0.3 <= load.busy_for <= 1.0
        assert load.backlog > 0.2
    finally:
        await asyncio.gather(*sends)
    await asyncio.sleep(0.05)  # the last slot has passed: idle again
    assert await second.load() == BudgetLoad(0.0, 0.0)


async def test_a_pause_in_one_process_holds_the_other(
    two_budgets: tuple[RedisSendBudget, RedisSendBudget],
) -> None:
    first, second = two_budgets
    await first.pause(0.5)
    assert 0.3 < await second.paused_for() <= 0.5
    started = time.monotonic()
    await second.acquire("c", False)
    assert time.monotonic() - started >= 0.4
    assert await second.paused_for() == 0.0


async def test_a_group_gets_no_more_than_its_limit(
    two_budgets: tuple[RedisSendBudget, RedisSendBudget],
) -> None:
    first, second = two_budgets  # 3 per minute into one group
    for budget in (first, second, first):
        async with asyncio.timeout(0.5):
            await budget.acquire("group-1", True)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await second.acquire("group-1", True)  # its turn is a minute after the first
    async with asyncio.timeout(0.5):
        await second.acquire("group-2", True)  # another group is not held
        await first.acquire("group-1", False)  # nor is a private chat of the same id


async def wait_until_async(
    probe: Callable[[], Awaitable[T]], expected: Callable[[T], bool], limit: float = 5.0
) -> None:
    """Poll an async ``probe`` until ``expected`` holds for what it returns."""
    async with asyncio.timeout(limit):
        while not expected(await probe()):  # noqa: ASYNC110 - the state is in Redis, polled
            await asyncio.sleep(0.01)


async def _subscribers_of(redis: Redis, channel: str) -> int:
    counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1])

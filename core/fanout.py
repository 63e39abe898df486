"""Publish/subscribe of small JSON-able messages by topic, across the bot's processes.

A WebSocket lives in one process, but the reply meant for it may be produced in another: the
producer publishes on the conversation's topic and whichever process holds the socket has
subscribed to it. Delivery is at most once, as Redis pub/sub is: a message published while a
subscriber's connection is down is lost, so callers must tolerate a missed frame (the web chat
reloads its history on reconnect)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from core.ratelimit import SharedStateUnavailable, redis_errors, redis_pool

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]

_CONFIRM_TIMEOUT = 5.0  # seconds Redis has to confirm a SUBSCRIBE
_RECONNECT_FIRST = 0.1  # seconds before the first reconnect attempt; doubles up to the next
_RECONNECT_MAX = 5.0


class Subscription(Protocol):
    async def close(self) -> None:
        """Stop delivery to this subscriber; at once, even for messages already received."""
        ...


class FanOut(Protocol):
    async def start(self) -> None: ...

    async def publish(self, topic: str, message: dict[str, Any]) -> None: ...

    async def subscribe(self, topic: str, deliver: Deliver) -> Subscription:
        """``deliver`` is awaited for each message on ``topic``, one at a time and in order;
        it should be quick (hand the frame to the socket's queue), since the next message
        waits for it. Messages published after this returns reach it."""
        ...

    async def aclose(self) -> None: ...


async def _deliver_safely(deliver: Deliver, topic: str, message: dict[str, Any]) -> None:
    # One broken subscriber must not starve the others or stop the reader, so this is a
    # catch-all by design; CancelledError is not an Exception and still propagates.
    try:
        await deliver(message)
    except Exception:
        log.exception("a subscriber to fan-out topic %r failed", topic)


class _Subscriber:
    def __init__(
        self, key: str, deliver: Deliver, remove: Callable[[_Subscriber], Awaitable[None]]
    ) -> None:
        self.key = key  # the topic in-process, its channel in Redis
        self.deliver = deliver
        self.closed = False
        self._remove = remove

    async def close(self) -> None:
        if not self.closed:
            self.closed = True  # before any await: nothing more is delivered from here on
            await self._remove(self)


class LocalFanOut:
    """In-process fan-out: ``publish`` awaits each subscriber's ``deliver`` directly, in order.
    Messages are passed as they are (not through JSON), so subscribers must not mutate them."""

    def __init__(self) -> None:
        self._topics: dict[str, list[_Subscriber]] = {}

    async def start(self) -> None:
        pass

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        for subscriber in tuple(self._topics.get(topic, ())):
            if not subscriber.closed:  # an earlier subscriber's deliver may have closed it
                await _deliver_safely(subscriber.deliver, topic, message)

    async def subscribe(self, topic: str, deliver: Deliver) -> Subscription:
        subscriber = _Subscriber(topic, deliver, self._remove)
        self._topics.setdefault(topic, []).append(subscriber)
        return subscriber

    async def _remove(self, subscriber: _Subscriber) -> None:
        subscribers = self._topics.get(subscriber.key, [])
        if subscriber in subscribers:
            subscribers.remove(subscriber)
        if not subscribers:
            self._topics.pop(subscriber.key, None)

    async def aclose(self) -> None:
        self._topics.clear()


class RedisFanOut:
    """Fan-out through Redis pub/sub, one channel per topic (``<prefix>:fanout:<topic>``).

    Each process holds one publishing connection and one pub/sub connection. A channel is
    subscribed while this process has at least one local subscriber to its topic, and one
    reader task hands each message to the topic's local subscribers in order. All publishes go
    through the one connection in call order, so one process's messages on a topic arrive in
    the order they were published. If the pub/sub connection drops, the reader reconnects with
    backoff and subscribes every topic again."""

    def __init__(self, url: str, prefix: str = "esoteric") -> None:
        # Imported here: a process without Redis never loads the client (see core.ratelimit).
        from redis.asyncio import Redis

        self._errors = redis_errors()
        self._pool = redis_pool(url, f"{prefix}:fanout")
        self._channel_prefix = f"{prefix}:fanout:"
        # A single connection behind a FIFO lock keeps concurrent publishes in call order.
        self._publisher = Redis(connection_pool=self._pool, single_connection_client=True)
        self._listener = Redis(connection_pool=self._pool)
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._channels: dict[str, list[_Subscriber]] = {}  # channel -> local subscribers
        self._unconfirmed: dict[str, asyncio.Future[None]] = {}  # channel -> SUBSCRIBE sent
        # Orders SUBSCRIBE/UNSUBSCRIBE and reconnects on the one pub/sub connection.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._reader is not None:
            return
        pubsub = self._listener.pubsub()
        try:
            await pubsub.connect()
        except self._errors as exc:
            await pubsub.aclose()
            raise SharedStateUnavailable(f"fan-out unavailable: {exc}") from exc
        self._pubsub = pubsub
        self._reader = asyncio.create_task(self._read(), name="fanout-reader")

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"))
        try:
            await self._publisher.publish(self._channel_prefix + topic, data)
        except self._errors as exc:
            raise SharedStateUnavailable(f"fan-out unavailable: {exc}") from exc

    async def subscribe(self, topic: str, deliver: Deliver) -> Subscription:
        if self._pubsub is None:
            raise RuntimeError("RedisFanOut.start() must be awaited before subscribe()")
        channel = self._channel_prefix + topic
        subscriber = _Subscriber(channel, deliver, self._remove)
        async with self._lock:
            subscribers = self._channels.setdefault(channel, [])
            subscribers.append(subscriber)
            confirmed = self._unconfirmed.get(channel)
            if len(subscribers) == 1:
                confirmed = asyncio.get_running_loop().create_future()
                self._unconfirmed[channel] = confirmed
                try:
                    await self._pubsub.subscribe(channel)
                except self._errors as exc:
                    self._unconfirmed.pop(channel, None)
                    subscribers.remove(subscriber)
                    del self._channels[channel]
                    raise SharedStateUnavailable(f"fan-out unavailable: {exc}") from exc
        if confirmed is not None:
            # SUBSCRIBE only takes effect when Redis answers it (the reader sees the answer);
            # until then a message published elsewhere would pass us by.
            try:
                async with asyncio.timeout(_CONFIRM_TIMEOUT):
                    await asyncio.shield(confirmed)
            except TimeoutError as exc:
                await subscriber.close()
                raise SharedStateUnavailable(
                    f"fan-out: Redis did not confirm the subscription to {topic!r}"
                ) from exc
        return subscriber

    async def _remove(self, subscriber: _Subscriber) -> None:
        channel = subscriber.key
        async with self._lock:
            subscribers = self._channels.get(channel, [])
            if subscriber in subscribers:
                subscribers.remove(subscriber)
            if subscribers or channel not in self._channels:
                return
            del self._channels[channel]
            if self._pubsub is None:
                return
            try:
                await self._pubsub.unsubscribe(channel)
            except self._errors as exc:
                # Closing must not fail the caller's cleanup; a reconnect subscribes only the
                # channels that still have subscribers, so this one goes away then.
                log.warning("fan-out could not unsubscribe %s: %s", channel, exc)

    async def _read(self) -> None:
        delay = _RECONNECT_FIRST
        broken = False
        while True:
            try:
                if broken:
                    await self._reconnect()
                    log.info("fan-out reconnected to Redis")
                    broken, delay = False, _RECONNECT_FIRST
                assert self._pubsub is not None
                message = await self._pubsub.get_message(timeout=None)
            except self._errors as exc:
                log.warning("fan-out lost Redis (%s); reconnecting in %.1fs", exc, delay)
                broken = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
                continue
            if message is not None:
                await self._dispatch(message)

    async def _reconnect(self) -> None:
        async with self._lock:
            old, self._pubsub = self._pubsub, self._listener.pubsub()
            if old is not None:
                await self._close_quietly(old)
            await self._pubsub.connect()
            if self._channels:
                await self._pubsub.subscribe(*self._channels)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind not in ("subscribe", "message"):  # unsubscribe answers and pongs: nothing to do
            return
        channel = _text(message["channel"])
        if kind == "subscribe":
            confirmed = self._unconfirmed.pop(channel, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            return
        subscribers = self._channels.get(channel)
        if not subscribers:
            return
        topic = channel.removeprefix(self._channel_prefix)
        try:
            payload = json.loads(message["data"])
        except ValueError:
            log.warning("fan-out dropped a message on %r that is not JSON", topic)
            return
        if not isinstance(payload, dict):
            log.warning("fan-out dropped a message on %r that is not an object", topic)
            return
        for subscriber in tuple(subscribers):
            if not subscriber.closed:
                await _deliver_safely(subscriber.deliver, topic, payload)

    async def _close_quietly(self, pubsub: PubSub) -> None:
        # The connection is being thrown away, possibly because it already broke.
        try:
            await pubsub.aclose()
        except self._errors as exc:
            log.debug("closing a fan-out connection: %s", exc)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])
            self._reader = None
        if self._pubsub is not None:
            await self._close_quietly(self._pubsub)
            self._pubsub = None
        self._channels.clear()
        await self._publisher.aclose()
        await self._listener.aclose()
        await self._pool.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def fanout_for(redis_url: str | None, prefix: str = "esoteric") -> FanOut:
    """Redis pub/sub when a Redis URL is configured, else in-process delivery."""
    return LocalFanOut() if redis_url is None else RedisFanOut(redis_url, prefix)

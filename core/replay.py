"""Requests seen before: a signed request sent again inside its signature's window is a replay.

A signature stays valid for minutes (Slack's: five), so whoever copies a signed request can send
it again within that window. A ``ReplayGuard`` remembers each request's key (its signature) for
as long as the signature would be accepted, and says whether a key is new. With Redis the memory
is shared by every bot process (``SET NX`` with an expiry decides, atomically); without it, this
process remembers, in a bounded map."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.ratelimit import SharedStateUnavailable, redis_pool

DEFAULT_MAX_KEYS = 100_000


class ReplayGuard(Protocol):
    async def first_time(self, key: str, ttl: float) -> bool:
        """Remember ``key`` for ``ttl`` seconds; ``False`` when it was already remembered (a
        replay). Raises ``SharedStateUnavailable`` when the shared memory cannot be reached:
        the caller refuses rather than risk running a request twice."""
        ...

    async def aclose(self) -> None: ...


class LocalReplayGuard:
    """This process's memory of keys, each until its expiry, at most ``max_keys`` of them.

    Only requests that passed their signature check are remembered, so an outsider cannot
    fill the map; when it is full anyway, the oldest key is forgotten first."""

    def __init__(
        self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    async def first_time(self, key: str, ttl: float) -> bool:
        now = self._clock()
        expires = self._expiry.get(key)
        if expires is not None and expires > now:
            return False
        self._expiry.pop(key, None)
        self._expiry[key] = now + ttl
        self._sweep(now)
        return True

    def _sweep(self, now: float) -> None:
        # Keys come in arrival order and their windows are about equal, so the expired ones
        # are at the front; a longer-lived key there only delays the sweep behind it.
        while self._expiry:
            oldest, expires = next(iter(self._expiry.items()))
            if expires > now and len(self._expiry) <= self._max_keys:
                break
            del self._expiry[oldest]

    def __len__(self) -> int:
        return len(self._expiry)

    async def aclose(self) -> None:
        self._expiry.clear()


class RedisReplayGuard:
    """Keys shared by every process of the bot, as ``<prefix>:replay:<key>`` in Redis."""

    def __init__(self, url: str, prefix: str = "esoteric") -> None:
        self._pool = redis_pool(url, f"{prefix}:replay")
        self._redis = Redis(connection_pool=self._pool)
        self._prefix = f"{prefix}:replay:"

    async def first_time(self, key: str, ttl: float) -> bool:
        milliseconds = max(1, math.ceil(ttl * 1000))
        try:
            added = await self._redis.set(self._prefix + key, b"1", nx=True, px=milliseconds)
        except (RedisError, OSError) as exc:
            raise SharedStateUnavailable(f"replay memory unavailable: {exc}") from exc
        return bool(added)

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()


def replay_guard_for(redis_url: str | None, prefix: str = "esoteric") -> ReplayGuard:
    """Redis when a Redis URL is configured (several processes), else this process's memory."""
    if redis_url is None:
        return LocalReplayGuard()
    return RedisReplayGuard(redis_url, prefix)

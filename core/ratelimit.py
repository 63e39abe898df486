"""Per-minute request limits by (scope, key), shared by every bot process through Redis.

Built on the ``limits`` library. Without a Redis URL the counts live in this process only,
which is right for a single process and for tests."""

from __future__ import annotations

import math
import time
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import BlockingConnectionPool, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from core.errors import StoreUnavailable


class SharedStateUnavailable(StoreUnavailable):
    """Redis, which holds the state the bot processes share, is down or unreachable.

    A ``StoreUnavailable`` so that the error funnels that already answer "busy, try again"
    for an unavailable database do the same here."""


def redis_pool(url: str, name: str | None = None) -> ConnectionPool:
    """A connection pool for the shared state that gives up within about two seconds when
    Redis is down: a caller waiting on a rate limit or a send slot should hear "unavailable",
    not hang. It holds at most 32 connections (a burst of a thousand sends queues for them
    rather than opening a thousand). ``name`` labels its connections in ``CLIENT LIST``."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=32,
        timeout=5.0,
        client_name=name,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
    )


def _limits_uri(url: str) -> str:
    # limits only parses this for credentials (the pool does the connecting), but it wants
    # its own async schemes.
    if url.startswith("unix://"):
        return "async+redis+" + url
    return "async+" + url


class RateLimits:
    """Per-minute limits by (scope, key); shared across processes when backed by Redis.

    The strategy is limits' moving window (a log of the last ``per_minute`` hits per key), not
    the sliding window counter: it is exact, never letting more than ``per_minute`` requests
    through in any 60 seconds, and the time its oldest entry leaves the window is an honest
    Retry-After. The counter keeps two numbers instead of a log and only approximates the
    window by weighting the previous minute; that saving matters for limits in the thousands,
    not for ours in the tens. In Redis the log's timestamps come from each process's clock, so
    processes need roughly synchronised clocks (NTP); a skew only moves the retry by as much."""

    def __init__(self, redis_url: str | None = None, prefix: str = "esoteric") -> None:
        self._pool: ConnectionPool | None = None
        self._storage: MemoryStorage | RedisStorage
        if redis_url is None:
            self._storage = MemoryStorage()
        else:
            self._pool = redis_pool(redis_url, f"{prefix}:ratelimit")
            # Our own pool, passed through limits' options, so that aclose can close it:
            # limits' async storages have no close of their own.
            options: dict[str, Any] = {"connection_pool": self._pool}
            self._storage = RedisStorage(
                _limits_uri(redis_url),
                implementation="redispy",
                key_prefix=f"{prefix}:ratelimit",
                **options,
            )
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def take(self, scope: str, key: str, per_minute: int) -> int:
        """Spend one request; 0 when allowed, else the whole seconds (>=1) to wait before a
        retry would be allowed. A refused request is not counted."""
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        # The scope is the limit's namespace: the Redis key reads
        # "<prefix>:ratelimit:<scope>/<key>/<per_minute>/1/minute".
        item = RateLimitItemPerMinute(per_minute, namespace=scope)
        try:
            if await self._limiter.hit(item, key):
                return 0
            stats = await self._limiter.get_window_stats(item, key)
        except (RedisError, OSError) as exc:
            raise SharedStateUnavailable(f"rate limits unavailable: {exc}") from exc
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        elif isinstance(self._storage, MemoryStorage):
            # The memory storage's expiry sweeper would otherwise outlive the loop.
            timer = self._storage.timer
            if timer is not None and not timer.done():
                timer.cancel()

"""Per-minute request limits by (scope, key), shared by every bot process through Redis.

Built on the ``limits`` library. Without a Redis URL the counts live in this process only,
which is right for a single process and for tests.

redis is imported only when a Redis URL is set: with the OpenTelemetry modules its client pulls
in, it costs about 6 MiB and 40 ms of every process's startup."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from core.errors import StoreUnavailable

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool


class SharedStateUnavailable(StoreUnavailable):
    """Redis, which holds the state the bot processes share, is down or unreachable.

    A ``StoreUnavailable`` so that the error funnels that already answer "busy, try again"
    for an unavailable database do the same here."""


def redis_errors() -> tuple[type[Exception], ...]:
    """What a call to Redis raises when Redis is down or unreachable."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


def redis_pool(url: str, name: str | None = None) -> ConnectionPool:
    """A connection pool for the shared state that gives up within about two seconds when
    Redis is down: a caller waiting on a rate limit or a send slot should hear "unavailable",
    not hang. It holds at most 32 connections (a burst of a thousand sends queues for them
    rather than opening a thousand). ``name`` labels its connections in ``CLIENT LIST``."""
    from redis.asyncio import BlockingConnectionPool
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

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

    The strategy is limits' sliding window counter: two counts per key (this minute's and the
    last), the previous one weighted by how much of it still falls in the last 60 seconds.
    The moving window (a log of every hit in the last minute) is exact, but its cost grows with
    the limit: at an API key's thousands a minute, each request spent more than a millisecond
    on the log (measured with bench/http_api.py). The counter never lets much more than
    ``per_minute`` through in any 60 seconds, and its reset time is an honest Retry-After."""

    def __init__(self, redis_url: str | None = None, prefix: str = "esoteric") -> None:
        self._pool: ConnectionPool | None = None
        self._storage: MemoryStorage | RedisStorage
        # What a failed count raises: the memory storage only fails as any code can.
        self._errors: tuple[type[Exception], ...] = ()
        if redis_url is None:
            self._storage = MemoryStorage()
        else:
            self._pool = redis_pool(redis_url, f"{prefix}:ratelimit")
            self._errors = redis_errors()
            # Our own pool, passed through limits' options, so that aclose can close it:
            # limits' async storages have no close of their own.
            options: dict[str, Any] = {"connection_pool": self._pool}
            self._storage = RedisStorage(
                _limits_uri(redis_url),
                implementation="redispy",
                key_prefix=f"{prefix}:ratelimit",
                **options,
            )
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)

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
        except self._errors as exc:
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

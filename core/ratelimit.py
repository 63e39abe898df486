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


# limits' window: RateLimitItemPerMinute's expiry, in seconds.
_MINUTE = 60


class _LocalWindows:
    """limits' sliding window counter as its memory storage keeps it, for one process, without
    the library's layers (a key string built per call, six awaited storage calls, a sweeping
    task per count): the same two counts a key, the same weights and the same reset times.

    A count is kept under the key and its window's number (the time over 60 seconds), and
    lives twice a window from its first hit, as in the library; the ones past their time are
    dropped every so often."""

    def __init__(self) -> None:
        # (scope, key, per_minute, window) -> [count, expires at]
        self._counts: dict[tuple[str, str, int, int], list[float]] = {}
        self._swept = time.time()

    def _get(self, key: tuple[str, str, int, int], now: float) -> int:
        entry = self._counts.get(key)
        if entry is None:
            return 0
        if entry[1] <= now:
            del self._counts[key]
            return 0
        return int(entry[0])

    def _windows(self, scope: str, key: str, per_minute: int, now: float) -> tuple[Any, ...]:
        """The previous and current window's keys, counts and seconds left (limits'
        ``get_sliding_window``)."""
        previous = (scope, key, per_minute, int((now - _MINUTE) / _MINUTE))
        current = (scope, key, per_minute, int(now / _MINUTE))
        previous_count = self._get(previous, now)
        current_count = self._get(current, now)
        previous_ttl = (
            0.0 if previous_count == 0 else (1 - (((now - _MINUTE) / _MINUTE) % 1)) * _MINUTE
        )
        current_ttl = (1 - ((now / _MINUTE) % 1)) * _MINUTE + _MINUTE
        return current, previous_count, previous_ttl, current_count, current_ttl

    def hit(self, scope: str, key: str, per_minute: int) -> bool:
        """One hit if the weighted count allows it (limits' ``acquire_sliding_window_entry``)."""
        now = time.time()
        if now - self._swept > _MINUTE:
            self._sweep(now)
        current, previous_count, previous_ttl, current_count, _ = self._windows(
            scope, key, per_minute, now
        )
        if math.floor(previous_count * previous_ttl / _MINUTE + current_count) + 1 > per_minute:
            return False
        entry = self._counts.get(current)
        if entry is None:
            entry = self._counts[current] = [0, 0.0]
        entry[0] += 1
        if entry[0] == 1:
            entry[1] = now + 2 * _MINUTE
        # As the library checks again after counting (and takes the hit back if over).
        if math.floor(previous_count * previous_ttl / _MINUTE + entry[0]) > per_minute:
            entry[0] = max(entry[0] - 1, 0)
            return False
        return True

    def reset_time(self, scope: str, key: str, per_minute: int) -> float:
        """When a refused key may try again (limits' ``get_window_stats``)."""
        now = time.time()
        _, previous_count, previous_ttl, current_count, current_ttl = self._windows(
            scope, key, per_minute, now
        )
        if not (previous_count or current_count):
            return now
        previous_reset_in, current_reset_in = math.inf, math.inf
        if previous_count:
            previous_reset_in = previous_ttl % (_MINUTE / previous_count)
        if current_count:
            current_reset_in = current_ttl % _MINUTE
        return now + min(previous_reset_in, current_reset_in)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key in [k for k, (_, expires) in self._counts.items() if expires <= now]:
            del self._counts[key]


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
        # One process (no Redis): the counts are kept here, the way limits' memory storage
        # keeps them, at a tenth of its cost (two counts a request on the web API).
        self._local: _LocalWindows | None = None
        if redis_url is None:
            self._storage = MemoryStorage()
            self._local = _LocalWindows()
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
        if self._local is not None:
            if self._local.hit(scope, key, per_minute):
                return 0
            return max(1, math.ceil(self._local.reset_time(scope, key, per_minute) - time.time()))
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

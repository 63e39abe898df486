"""The outgoing-message budget of one bot: Telegram's flood limits, shared by its processes.

Telegram allows a bot about 30 messages a second overall and about 20 a minute into one group,
and answers 429 ``retry_after`` when pushed past them. ``acquire`` waits for a send's turn on
both, and ``pause`` holds every send after a 429. With Redis the budget is one for all of the
bot's processes; give each bot its own ``prefix`` when several bots share a Redis.

Both limits are reservations: a caller books the next free slot at once and then sleeps until
it, so waiters are served in arrival order without polling. A caller cancelled while asleep
leaves its slot unused; that only wastes a slot."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from core.ratelimit import SharedStateUnavailable, redis_errors, redis_pool

if TYPE_CHECKING:
    # redis is imported only when a Redis URL is set: one process needs none of it.
    from redis.commands.core import AsyncScript

GROUP_WINDOW = 60.0  # seconds: Telegram's group limit is per minute
_PRUNE_FLOOR = 1024  # groups remembered before the local budget sweeps out quiet ones


@dataclass(frozen=True)
class BudgetLoad:
    """How hard the global rate is used right now."""

    # Seconds of sends already booked ahead of now (0.0 when idle).
    backlog: float
    # Seconds the rate has been used without a gap, up to now: every send over that time was
    # booked while the one before still held the budget. A second of it means the sends of the
    # last second reached the budget (0.0 when idle or unpaced).
    busy_for: float


class SendBudget(Protocol):
    async def acquire(self, chat: str, group: bool) -> None:
        """Wait until this send fits the global rate and, for a group, that chat's
        per-minute limit. Waiters are served roughly in arrival order."""
        ...

    async def pause(self, seconds: float) -> None:
        """Telegram answered 429 ``retry_after``: hold every send, everywhere, that long."""
        ...

    async def paused_for(self) -> float: ...

    async def backlog(self) -> float:
        """Seconds of sends already booked ahead of now on the global rate (0.0 when idle);
        a growing backlog says the budget is saturated."""
        ...

    async def load(self) -> BudgetLoad:
        """The backlog and how long the rate has been in continuous use, in one read."""
        ...

    async def aclose(self) -> None: ...


def _check(rate: float | None, group_per_minute: int) -> None:
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive or None")
    if group_per_minute < 1:
        raise ValueError("group_per_minute must be at least 1")


class LocalSendBudget:
    """The budget of a bot run as one process.

    The global rate is GCRA without a burst: each send books ``max(now, tat)`` and moves the
    theoretical arrival time ``tat`` one interval on, so sends leave evenly spaced (Telegram
    answers bursts with 429 even under 30 a second). A group keeps the times of its last
    ``group_per_minute`` sends, and the next may go a minute after the oldest of them: exact,
    where a GCRA of 20/60 s with a burst of 20 would let 39 through in some minute.

    ``rate=None`` removes the global pace (benchmarks); the pause and the group limit still
    apply. Booking has no await between reading and writing the state, so it needs no lock,
    and with no pace and no pause ``acquire`` never suspends."""

    def __init__(
        self,
        rate: float | None,
        group_per_minute: int = 20,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        _check(rate, group_per_minute)
        self._interval = None if rate is None else 1.0 / rate
        self._group_limit = group_per_minute
        self._clock = clock
        self._sleep = sleep
        self._tat = 0.0  # theoretical arrival time of the next send on the global rate
        self._busy_since = 0.0  # when the current run of back-to-back sends began
        self._paused_until = 0.0
        self._groups: dict[str, deque[float]] = {}  # chat -> its last booked send times
        self._prune_at = _PRUNE_FLOOR

    async def acquire(self, chat: str, group: bool) -> None:
        if group:
            wait = self._book_group(chat)
            if wait > 0:
                await self._sleep(wait)
        while True:
            now = self._clock()
            if now < self._paused_until:
                await self._sleep(self._paused_until - now)
                continue
            if self._interval is None:
                return
            if self._tat < now:
                self._busy_since = now  # the rate was idle: a new run of sends begins
            slot = self._tat if self._tat > now else now
            self._tat = slot + self._interval
            if slot <= now:
                return
            await self._sleep(slot - now)
            # A 429 may have come in while this send waited for its slot.
            if self._clock() >= self._paused_until:
                return

    def _book_group(self, chat: str) -> float:
        now = self._clock()
        sent = self._groups.get(chat)
        if sent is None:
            self._prune(now)
            sent = self._groups[chat] = deque(maxlen=self._group_limit)
        slot = now
        if len(sent) == self._group_limit:
            slot = max(now, sent[0] + GROUP_WINDOW)
        sent.append(slot)  # the deque drops the oldest time
        return slot - now

    def _prune(self, now: float) -> None:
        # Amortised: sweep only when the table has doubled since the last sweep.
        if len(self._groups) < self._prune_at:
            return
        quiet = [chat for chat, sent in self._groups.items() if sent[-1] + GROUP_WINDOW <= now]
        for chat in quiet:
            del self._groups[chat]
        self._prune_at = max(_PRUNE_FLOOR, 2 * len(self._groups))

    async def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    async def backlog(self) -> float:
        return max(0.0, self._tat - self._clock())

    async def load(self) -> BudgetLoad:
        now = self._clock()
        if self._tat < now:
            return BudgetLoad(0.0, 0.0)
        return BudgetLoad(self._tat - now, now - self._busy_since)

    async def aclose(self) -> None:
        pass


# Times inside the scripts are microseconds from Redis' own clock (TIME), so the processes'
# clocks do not matter. They are written with %d: Lua's tostring keeps only 14 digits.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
"""

# KEYS: tat, pause, busy. ARGV: interval (µs; 0 = no pace). Returns {wait µs, booked}.
# While a pause is in force nothing is booked (booked = 0): the caller sleeps it out and asks
# again. Otherwise GCRA without a burst: the send's slot is max(now, tat), and tat moves one
# interval past it; the key expires a second after the last booked slot (idle = no key).
# busy holds when the current run of back-to-back sends began (reset when tat had passed).
_BOOK_SEND = (
    _NOW
    + """
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return {paused * 1000, 0}
end
local interval = tonumber(ARGV[1])
if interval <= 0 then
  return {0, 1}
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
  redis.call('SET', KEYS[3], string.format('%d', now))
end
local after = tat + interval
local ttl = string.format('%d', math.floor((after - now) / 1000) + 1000)
redis.call('SET', KEYS[1], string.format('%d', after), 'PX', ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return {tat - now, 1}
"""
)

# KEYS: the group's log. ARGV: limit, window (µs). Returns the wait in µs.
# The log holds the group's last `limit` booked send times, newest first. The new send may go
# a window after the one `limit` places back, so that no window holds more than `limit`.
# Booked times never decrease, so the log stays sorted.
_BOOK_GROUP = (
    _NOW
    + """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local slot = now
local oldest = tonumber(redis.call('LINDEX', KEYS[1], limit - 1))
if oldest and oldest + window > slot then
  slot = oldest + window
end
redis.call('LPUSH', KEYS[1], string.format('%d', slot))
redis.call('LTRIM', KEYS[1], 0, limit - 1)
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.floor((slot + window - now) / 1000) + 1))
return slot - now
"""
)

# KEYS: pause. ARGV: milliseconds. Lengthens the pause, never shortens it.
_PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
"""

# KEYS: tat, busy. Returns {µs booked ahead of now, µs the rate has been in continuous use}.
_LOAD = (
    _NOW
    + """
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  return {0, 0}
end
local since = tonumber(redis.call('GET', KEYS[2])) or now
return {tat - now, now - since}
"""
)


class RedisSendBudget:
    """The budget shared by all processes of one bot, kept in Redis under
    ``<prefix>:sendbudget:*``; the same rules as ``LocalSendBudget``, booked atomically by
    small Lua scripts.

    A group send books its group slot first and its global slot when that comes, so under a
    saturated global rate a group's sends can start up to the global backlog later than
    booked, and a minute may then hold one more than the limit by that margin (milliseconds
    normally). Redis being down raises ``SharedStateUnavailable``: a send must not go
    unpaced."""

    def __init__(
        self,
        url: str,
        rate: float | None,
        group_per_minute: int = 20,
        prefix: str = "esoteric",
    ) -> None:
        _check(rate, group_per_minute)
        self._interval_us = 0 if rate is None else max(1, round(1_000_000 / rate))
        self._group_limit = group_per_minute
        from redis.asyncio import Redis

        self._errors = redis_errors()
        self._pool = redis_pool(url, f"{prefix}:sendbudget")
        self._redis = Redis(connection_pool=self._pool)
        base = f"{prefix}:sendbudget"
        self._rate_key = f"{base}:rate"
        self._pause_key = f"{base}:pause"
        self._busy_key = f"{base}:busy"
        self._group_prefix = f"{base}:group:"
        self._book_send = self._redis.register_script(_BOOK_SEND)
        self._book_group = self._redis.register_script(_BOOK_GROUP)
        self._pause = self._redis.register_script(_PAUSE)
        self._load = self._redis.register_script(_LOAD)

    async def acquire(self, chat: str, group: bool) -> None:
        if group:
            key = self._group_prefix + chat
            wait_us = await self._run(
                self._book_group, [key], [self._group_limit, int(GROUP_WINDOW * 1_000_000)]
            )
            if wait_us > 0:
                await asyncio.sleep(wait_us / 1_000_000)
        while True:
            wait_us, booked = await self._run(
                self._book_send,
                [self._rate_key, self._pause_key, self._busy_key],
                [self._interval_us],
            )
            if wait_us <= 0:
                return
            await asyncio.sleep(wait_us / 1_000_000)
            # Paused: book now that the pause is over. Booked: go, unless a 429 came in while
            # this send waited for its slot.
            if booked and await self.paused_for() <= 0:
                return

    async def pause(self, seconds: float) -> None:
        milliseconds = max(1, round(seconds * 1000))
        await self._run(self._pause, [self._pause_key], [milliseconds])

    async def paused_for(self) -> float:
        try:
            milliseconds = await self._redis.pttl(self._pause_key)
        except self._errors as exc:
            raise SharedStateUnavailable(f"send budget unavailable: {exc}") from exc
        return max(0, milliseconds) / 1000

    async def backlog(self) -> float:
        return (await self.load()).backlog

    async def load(self) -> BudgetLoad:
        backlog_us, busy_us = await self._run(self._load, [self._rate_key, self._busy_key], [])
        return BudgetLoad(backlog_us / 1_000_000, busy_us / 1_000_000)

    async def _run(self, script: AsyncScript, keys: list[str], args: list[int]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except self._errors as exc:
            raise SharedStateUnavailable(f"send budget unavailable: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()


def send_budget_for(
    redis_url: str | None,
    rate: float | None,
    group_per_minute: int = 20,
    prefix: str = "esoteric",
) -> SendBudget:
    """Redis when a Redis URL is configured (several processes), else this process's memory."""
    if redis_url is None:
        return LocalSendBudget(rate, group_per_minute)
    return RedisSendBudget(redis_url, rate, group_per_minute, prefix)

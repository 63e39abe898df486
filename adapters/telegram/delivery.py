"""Calling the Bot API within Telegram's limits.

One global pace (about 30 messages per second) shared by every chat, a global pause whenever
Telegram answers 429 (its flood control is per bot, so every chat must wait it out), retries with
backoff for network errors, and no retry at all for a chat that blocked the bot.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.warnings import PTBDeprecationWarning

from core.errors import ChannelError

log = logging.getLogger(__name__)

T = TypeVar("T")


class ChatBlocked(ChannelError):
    """The chat blocked the bot or removed it (Telegram 403); never retried."""


class FloodLimited(ChannelError):
    """Telegram kept answering 429 beyond the retry budget, or retrying was not wanted."""


def seconds(value: int | float | dtm.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def _retry_after(exc: RetryAfter) -> float:
    # PTB 22 warns that the attribute's type will change; either type is read correctly here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        return seconds(exc.retry_after)


class SendPacer:
    """A token bucket for outgoing messages plus a shared pause after flood control.

    ``rate=None`` disables the pace (the pause after a 429 still applies). Waiters are served
    in arrival order."""

    def __init__(
        self,
        rate: float | None,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive or None")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, round(rate or 1)))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, delay: float) -> None:
        """Hold every send for ``delay`` seconds from now (Telegram's ``retry_after``)."""
        self._paused_until = max(self._paused_until, self._clock() + delay)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                if self.rate is None:
                    return
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                # The tolerance keeps float rounding from leaving a token just short of whole.
                if self._tokens >= 1 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep(max((1 - self._tokens) / self.rate, 1e-3))


@dataclass(frozen=True)
class RetryPolicy:
    flood_retries: int = 8
    network_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0


class BotApiCaller:
    """Runs one Bot API call with the pace, flood control and retries applied."""

    def __init__(self, pacer: SendPacer, policy: RetryPolicy) -> None:
        self.pacer = pacer
        self.policy = policy

    async def call(
        self,
        what: str,
        action: Callable[[], Awaitable[T]],
        *,
        paced: bool = True,
        retry: bool = True,
    ) -> T:
        """``BadRequest`` passes through untouched (the caller knows which ones it can fix);
        every other Telegram error leaves as a ``ChannelError``."""
        floods = failures = 0
        while True:
            if paced:
                await self.pacer.acquire()
            try:
                return await action()
            except RetryAfter as exc:
                delay = _retry_after(exc)
                self.pacer.pause(delay)
                floods += 1
                if not retry or floods > self.policy.flood_retries:
                    raise FloodLimited(f"{what}: flood control, retry after {delay:g}s") from exc
                log.warning("Telegram flood control on %s: waiting %gs", what, delay)
                if not paced:
                    await asyncio.sleep(delay)
            except Forbidden as exc:
                raise ChatBlocked(f"{what}: {exc.message}") from exc
            except BadRequest:
                raise
            except ChatMigrated as exc:
                raise ChannelError(f"{what}: the group moved to chat {exc.new_chat_id}") from exc
            except NetworkError as exc:  # TimedOut included
                failures += 1
                if not retry or failures > self.policy.network_retries:
                    raise ChannelError(f"{what}: {exc.message}") from exc
                delay = min(self.policy.max_delay, self.policy.base_delay * 2 ** (failures - 1))
                log.warning("network error on %s (%s); retrying in %gs", what, exc, delay)
                await asyncio.sleep(delay)
            except TelegramError as exc:
                raise ChannelError(f"{what}: {exc.message}") from exc

"""Calling the Bot API within Telegram's limits.

One send budget (``core.sendbudget``: about 30 messages a second per bot and 20 a minute into a
group, shared by every process through Redis when there are several), a pause of every sender
whenever Telegram answers 429 (its flood control is per bot), retries with backoff for network
errors, and no retry at all for a chat that blocked the bot.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
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

from core.errors import ChannelError, RetryLater
from core.sendbudget import SendBudget

log = logging.getLogger(__name__)

T = TypeVar("T")


class ChatBlocked(ChannelError):
    """The chat blocked the bot or removed it (Telegram 403); never retried."""


class FloodLimited(RetryLater):
    """Telegram kept answering 429 beyond the retry budget, or retrying was not wanted: the
    outbox sends it again after ``retry_after``."""


def seconds(value: int | float | dtm.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def _retry_after(exc: RetryAfter) -> float:
    # PTB 22 warns that the attribute's type will change; either type is read correctly here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        return seconds(exc.retry_after)


@dataclass(frozen=True)
class RetryPolicy:
    flood_retries: int = 8
    network_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0


class BotApiCaller:
    """Runs one Bot API call with the pace, flood control and retries applied."""

    def __init__(self, budget: SendBudget, policy: RetryPolicy) -> None:
        self.budget = budget
        self.policy = policy

    async def call(
        self,
        what: str,
        action: Callable[[], Awaitable[T]],
        *,
        paced: bool = True,
        retry: bool = True,
        chat: str | None = None,
        group: bool = False,
    ) -> T:
        """``BadRequest`` passes through untouched (the caller knows which ones it can fix);
        every other Telegram error leaves as a ``ChannelError``."""
        floods = failures = 0
        while True:
            if paced:
                await self.budget.acquire(chat or "", group)
            try:
                return await action()
            except RetryAfter as exc:
                delay = _retry_after(exc)
                await self.budget.pause(delay)
                floods += 1
                if not retry or floods > self.policy.flood_retries:
                    raise FloodLimited(
                        f"{what}: flood control, retry after {delay:g}s", delay
                    ) from exc
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

"""Turns off python-telegram-bot's update loop: bounded concurrency across chats, one message
at a time per chat, in arrival order.

PTB processes updates one after another; awaiting a whole turn there would make every chat wait
for the slowest one. Unbounded concurrency is worse in another way (the HTTP pool and the
database slow down with many requests in flight, and a chat's replies may overtake each other).
So each chat gets a queue, and at most ``workers`` chats run a turn at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ChatDispatcher(Generic[T]):
    def __init__(self, handle: Callable[[T], Awaitable[None]], workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._handle = handle
        self._slots = asyncio.Semaphore(workers)
        self._queues: dict[Hashable, deque[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Messages accepted and not yet handled (including the ones being handled)."""
        return sum(len(q) for q in self._queues.values())

    def submit(self, key: Hashable, item: T) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(item)
            return
        queue = self._queues[key] = deque([item])
        task = asyncio.create_task(self._run(key, queue), name=f"telegram-chat:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable, queue: deque[T]) -> None:
        try:
            while queue:
                # The slot is taken per message so a busy chat cannot starve the others.
                async with self._slots:
                    try:
                        await self._handle(queue[0])
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        # ``handle`` is the adapter's error funnel and should not raise; if it
                        # does, the chat's later messages must still be handled.
                        log.exception("Telegram message handling failed")
                queue.popleft()
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]

    async def drain(self, grace: float) -> int:
        """Wait for accepted messages to be handled; cancel what is left after ``grace`` seconds.
        Returns how many messages were abandoned (the core answers them at the next start)."""
        if self._tasks:
            _, still = await asyncio.wait(list(self._tasks), timeout=grace)
            if still:
                abandoned = self.pending
                log.warning("stopping with %d Telegram message(s) unanswered", abandoned)
                for task in still:
                    task.cancel()
                await asyncio.gather(*still, return_exceptions=True)
                return abandoned
        return 0

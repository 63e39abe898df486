"""One outbox for everything the bot sends: turn replies, a rep's relayed messages, handoff
notices and reminders, broadcasts, and whatever recovery finds undelivered.

Every item is persisted first (``core.store.turns``), then sent once and marked. A chat's items
go out in id order: they are sent by the chat's turn (or a flush job of the chat, which runs
under the same per-chat lock), never beside it. A rate limit from the platform
(``RetryLater``) puts the item back with its retry-after, and nothing of that chat overtakes it;
an item a process died while sending is never sent again (see ``find_backlog``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from core.engine import TurnJob, TurnQueue
from core.errors import RetryLater
from core.messages import Reply, Target, utcnow
from core.ports import OutboundPort
from core.store.models import OutboxStatus
from core.store.turns import ChatAddress, OutboxRow, TurnStore

log = logging.getLogger(__name__)

# An item that keeps being rate limited is given up after this many tries.
MAX_SEND_ATTEMPTS = 6


def target_of(item: OutboxRow) -> Target:
    return Target(item.channel, item.chat_key, item.thread, item.reply_to)


class Outbox:
    def __init__(
        self,
        store: TurnStore,
        queue: TurnQueue | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.queue = queue
        self.clock = clock
        self.ports: dict[str, OutboundPort] = {}

    def register(self, name: str, port: OutboundPort) -> None:
        self.ports[name] = port

    async def send(self, item: OutboxRow) -> str:
        """Send an item this process has claimed (``sending``) and record how it went."""
        port = self.ports.get(item.channel)
        if port is None:
            # Another process (or this one's next start) with the channel sends it.
            log.warning("no %s channel here: outbox item %d kept", item.channel, item.id)
            await self.store.mark_outbox(
                item.id, item.message_id, OutboxStatus.PENDING, self.clock()
            )
            return OutboxStatus.PENDING
        try:
            await port.send(target_of(item), Reply.from_payload(item.payload))
        except asyncio.CancelledError:
            raise
        except RetryLater as exc:
            return await self.retry_later(item, exc)
        except Exception as exc:  # the channel refused it: recorded, not retried
            log.exception("outbox item %d not delivered", item.id)
            await self.store.mark_outbox(
                item.id, item.message_id, OutboxStatus.FAILED, self.clock(), error=str(exc)[:500]
            )
            return OutboxStatus.FAILED
        await self.store.mark_outbox(item.id, item.message_id, OutboxStatus.SENT, self.clock())
        return OutboxStatus.SENT

    async def show(self, item: OutboxRow) -> None:
        """Show an item stored as delivered (``delivered_when_stored``): nothing to record."""
        port = self.ports.get(item.channel)
        if port is None:
            return
        try:
            await port.send(target_of(item), Reply.from_payload(item.payload))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbox item %d stored but not shown", item.id)

    async def retry_later(self, item: OutboxRow, exc: RetryLater) -> str:
        now = self.clock()
        if item.attempts + 1 >= MAX_SEND_ATTEMPTS:
            await self.store.mark_outbox(
                item.id, item.message_id, OutboxStatus.FAILED, now, error=str(exc)[:500]
            )
            return OutboxStatus.FAILED
        delay = max(0.5, exc.retry_after)
        await self.store.mark_outbox(
            item.id,
            item.message_id,
            OutboxStatus.PENDING,
            now,
            error=str(exc)[:500],
            not_before=now + timedelta(seconds=delay),
        )
        if item.conversation_id is not None and self.queue is not None:
            await self.queue.defer(TurnJob(_chat(item), outbox_id=item.id), delay)
        return OutboxStatus.PENDING

    async def flush(self, pending: list[OutboxRow]) -> bool:
        """Send a chat's pending items in order (the caller holds the chat's turn). ``False``
        when one must wait for a retry-after: later items of the chat wait behind it."""
        now = self.clock()
        for row in pending:
            if row.not_before is not None and row.not_before > now:
                if self.queue is not None:
                    delay = (row.not_before - now).total_seconds()
                    await self.queue.defer(TurnJob(_chat(row), outbox_id=row.id), delay)
                return False
            item = await self.store.claim_outbox(row.id, self.clock())
            if item is None:
                continue  # sent meanwhile
            if await self.send(item) == OutboxStatus.PENDING:
                return False
        return True

    async def flush_chat(self, chat: ChatAddress) -> bool:
        return await self.flush(await self.store.pending_for_chat(chat))

    async def send_loose(self, item_id: int) -> str | None:
        """Send an item that belongs to no conversation (a broadcast's), once."""
        item = await self.store.claim_outbox(item_id, self.clock())
        if item is None:
            return None
        return await self.send(item)


def _chat(row: OutboxRow) -> ChatAddress:
    return ChatAddress(row.channel, row.chat_key, row.thread)

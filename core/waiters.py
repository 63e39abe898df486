"""Waiting for a message's turn, wherever it runs.

An API call waits for the reply to the message it stored; the turn may run in this process or
in another worker. A turn this process runs resolves its waiters directly; a turn elsewhere is
announced by Postgres (``NOTIFY`` sent by the turn's own transaction, so only committed replies
are heard of). A slow poll of the store catches anything a lost connection missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.messages import Reply
from core.store.models import MessageStatus
from core.store.turns import TURNS_CHANNEL, TurnStore, json_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnOutcome:
    """How a message's turn ended: its reply (``None``: deliberately unanswered, e.g. a banned
    sender or a relayed message) and the reply's message id."""

    message_id: int
    conversation_id: int
    reply: Reply | None
    reply_id: int | None
    status: str = MessageStatus.ANSWERED


class TurnWaiters:
    def __init__(
        self, store: TurnStore, listen_dsn: str | None = None, poll_every: float = 1.0
    ) -> None:
        self.store = store
        self.listen_dsn = listen_dsn
        self.poll_every = poll_every
        self._futures: dict[int, asyncio.Future[TurnOutcome]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._connection: Any = None
        self._started = False

    @property
    def waiting(self) -> int:
        return len(self._futures)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._tasks.append(asyncio.create_task(self._poll(), name="turn-waiters-poll"))
        if self.listen_dsn is not None:
            self._tasks.append(asyncio.create_task(self._listen(), name="turn-waiters-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._started = False
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()

    def expect(self, message_id: int) -> asyncio.Future[TurnOutcome]:
        """The future of ``message_id``'s outcome; every caller gets the same one. Register
        before checking the store, so a turn finishing in between is not missed."""
        future = self._futures.get(message_id)
        if future is None:
            future = self._futures[message_id] = asyncio.get_running_loop().create_future()
            future.add_done_callback(lambda _: self._forget(message_id, future))
        return future

    def _forget(self, message_id: int, future: asyncio.Future[TurnOutcome]) -> None:
        if self._futures.get(message_id) is future:
            del self._futures[message_id]

    def resolve(self, outcome: TurnOutcome, message_ids: Sequence[int] = ()) -> None:
        """A turn this process ran: every message it answered gets the same outcome."""
        for message_id in message_ids or (outcome.message_id,):
            future = self._futures.get(message_id)
            if future is not None and not future.done():
                future.set_result(
                    outcome
                    if message_id == outcome.message_id
                    else TurnOutcome(
                        message_id,
                        outcome.conversation_id,
                        outcome.reply,
                        outcome.reply_id,
                        outcome.status,
                    )
                )

    async def check(self, message_ids: Sequence[int]) -> None:
        """Resolve waiters whose messages the store shows finished."""
        ids = [m for m in message_ids if m in self._futures]
        if not ids:
            return
        for row in await self.store.outcome_rows(ids):
            message_id, status, conversation_id, reply_id, text, meta = row
            if status == MessageStatus.RECEIVED:
                continue
            reply = Reply.from_payload({**json_dict(meta), "text": text}) if reply_id else None
            self.resolve(TurnOutcome(message_id, conversation_id, reply, reply_id, status))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_every)
            if not self._futures:
                continue
            try:
                await self.check(list(self._futures))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the next poll tries again
                log.debug("waiters' poll failed: %s", exc)

    async def _listen(self) -> None:
        import asyncpg

        assert self.listen_dsn is not None
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self.listen_dsn)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _, lost=lost: lost.set())
                await connection.add_listener(TURNS_CHANNEL, self._heard)
                # Anything finished while the connection was down is caught up here.
                await self.check(list(self._futures))
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for finished turns failed (%s); retrying", exc)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            await asyncio.sleep(1.0)

    def _heard(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        ids = [int(p) for p in payload.split(",") if p.isdigit() and int(p) in self._futures]
        if ids:
            task = asyncio.ensure_future(self._check_quietly(ids))
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)

    async def _check_quietly(self, ids: list[int]) -> None:
        try:
            await self.check(ids)
        except Exception as exc:  # the poll catches it up
            log.debug("reading finished turns failed: %s", exc)

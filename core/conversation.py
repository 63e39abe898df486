"""The turn pipeline: record, queue, route, answer, persist, deliver.

``ConversationService.accept`` is what every channel calls: it stores the inbound message
(deduplicated on the channel's event id) and queues a turn for its chat, before the channel
acknowledges the delivery. The turn runs later, in this process or another (``core.engine``),
one at a time per chat: it reads the chat's oldest unanswered message under that guarantee,
routes it through the handler chain (``core.handlers``), persists the reply with its outbox
item in one transaction, and sends it (``core.outbox``). ``handle`` is ``accept`` plus waiting
for the turn's outcome (``core.waiters``). ``recover`` finds what a crash left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.exc import IntegrityError

from core.agent.base import Agent, AgentResult
from core.agent.scripted import ScriptedAgent
from core.engine import LocalTurnQueue, TurnJob, TurnQueue
from core.errors import StoreUnavailable
from core.handlers import (
    Counters,
    Decision,
    Handler,
    HandlerChain,
    LiveReply,
    Turn,
    command_of,
    default_handlers,
)
from core.i18n import tr
from core.messages import MAX_TEXT_CHARS, Inbound, Reply, Target, utcnow
from core.outbox import Outbox
from core.ports import OutboundPort
from core.store import repository as repo
from core.store.database import Database
from core.store.models import MessageStatus, OutboxStatus
from core.store.turns import (
    Answer,
    ChatAddress,
    Outbound,
    OutboxRow,
    Persisted,
    Recorded,
    TurnAlreadyAnswered,
    TurnData,
    TurnStore,
)
from core.waiters import TurnOutcome, TurnWaiters

log = logging.getLogger(__name__)

__all__ = ["ConversationService", "Counters", "ServiceConfig", "TurnOutcome"]

# Conversation state the pipeline keeps for itself: the last reply asked for the contact.
CONTACT_KEYBOARD = "_contact_keyboard"

GAVE_UP = tr(
    "en",
    "Sorry, something went wrong on my side and I couldn't answer that. Please send it again "
    "in a moment.",
)


@dataclass(frozen=True)
class ServiceConfig:
    idle_minutes: int = 30
    history_messages: int = 20
    max_text_chars: int = MAX_TEXT_CHARS
    # Turns in flight in this process (ESOTERIC_WORKER_CONCURRENCY).
    concurrency: int = 16
    # Consecutive waiting messages of one sender answered as one turn (ESOTERIC_MERGE_MESSAGES).
    merge_messages: int = 5
    # Edits of one message answered at most this many times (ESOTERIC_MAX_EDITS).
    max_edits: int = 3
    # Messages a sender may send a minute before flood control answers "slow down" (only
    # for the default chain; the composition root builds its own from settings).
    flood_per_minute: int = 20
    # A message whose turn fails this many times is given up (the customer is told).
    max_turn_attempts: int = 3
    # Recovery leaves work younger than this to the jobs that are about to do it.
    sweep_grace_seconds: float = 30.0
    # An outbox item "sending" for longer than this belongs to a process that died.
    send_deadline_seconds: float = 120.0
    stop_grace_seconds: float = 30.0
    # Persona per channel: the sales team's Slack gets the internal assistant.
    personas: dict[str, str] = field(default_factory=lambda: {"slack": "sales"})


class HandoffRequester(Protocol):
    """Opens a human handoff (core.handoff.HandoffService)."""

    async def request(self, conversation_id: int, reason: str) -> int | None: ...


@dataclass(frozen=True)
class Accepted:
    """A stored message, and (when asked for) the future of its turn's outcome."""

    recorded: Recorded
    outcome: asyncio.Future[TurnOutcome] | None = None

    @property
    def message_id(self) -> int:
        return self.recorded.message_id


class ConversationService:
    def __init__(
        self,
        db: Database,
        agent: Agent,
        scripted: ScriptedAgent,
        config: ServiceConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
        *,
        queue: TurnQueue | None = None,
        outbox: Outbox | None = None,
        handlers: Sequence[Handler] | None = None,
        waiters: TurnWaiters | None = None,
        counters: Counters | None = None,
        handoff: HandoffRequester | None = None,
    ) -> None:
        self.db = db
        self.agent = agent
        self.scripted = scripted
        self.config = config or ServiceConfig()
        self.clock = clock
        self.queue = queue or LocalTurnQueue(self.config.concurrency)
        self.outbox = outbox or Outbox(TurnStore(db), self.queue, clock)
        if self.outbox.queue is None:
            self.outbox.queue = self.queue
        self.store = self.outbox.store
        self.counters = counters or Counters()
        self.chain = HandlerChain(
            handlers
            if handlers is not None
            else default_handlers(
                db,
                agent,
                scripted,
                self.counters,
                max_text_chars=self.config.max_text_chars,
                personas=self.config.personas,
                flood_per_minute=self.config.flood_per_minute,
            )
        )
        self.waiters = waiters or TurnWaiters(self.store)
        self.handoff = handoff
        self._ingest_locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._ingest_users: dict[tuple[str, str, str], int] = {}
        self._started = False
        self._closing = False

    # -- wiring and lifecycle ------------------------------------------------------------------

    @property
    def ports(self) -> dict[str, OutboundPort]:
        return self.outbox.ports

    def register_channel(self, name: str, port: OutboundPort) -> None:
        """Called by the composition root: replies for ``name`` go out through ``port``."""
        self.outbox.register(name, port)

    @property
    def _history_limit(self) -> int:
        # The scripted agent keeps its state in the conversation and reads no history.
        return self.config.history_messages if self.agent is not self.scripted else 0

    @property
    def queued(self) -> int:
        """Turns running or waiting in this process."""
        return self.queue.running + self.queue.waiting

    async def start(self) -> None:
        """Start this process's turn workers (idempotent)."""
        if self._started:
            return
        self._started = True
        await self.queue.start(self.run_turn)
        await self.waiters.start()

    async def idle(self) -> None:
        """Wait until no turn runs (or waits) in this process."""
        await self.queue.idle()

    async def aclose(self) -> None:
        """Stop taking messages and let turns in flight finish."""
        self._closing = True
        if self._started:
            await self.queue.stop(self.config.stop_grace_seconds)
            await self.waiters.stop()

    # -- entry points --------------------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> TurnOutcome | None:
        """Record ``inbound`` and wait for its turn. ``None`` for a duplicate delivery. Raises
        ``StoreUnavailable`` when the message could not be stored."""
        accepted = await self.accept(inbound, expect=True)
        if accepted is None:
            return None
        assert accepted.outcome is not None
        return await asyncio.shield(accepted.outcome)

    async def accept(
        self, inbound: Inbound, *, expect: bool = False, durable: bool = True
    ) -> Accepted | None:
        """Store ``inbound`` and queue its chat's turn; ``None`` for a duplicate. Returns once
        the message is stored, and on disk, which is when a channel may acknowledge its
        delivery. With ``expect``, the result carries the future of the turn's outcome.
        ``durable=False`` leaves making it durable to the caller (``sync_inbound``), for a
        channel that acknowledges a batch at once (Telegram's polling)."""
        accepted = await self._accept(inbound, expect)
        if durable:
            await self.sync_inbound()
        return accepted

    async def sync_inbound(self) -> None:
        """Every message accepted so far is on disk (messages accepted together share one
        sync). Raises ``StoreUnavailable`` when the disk would not take them."""
        await self.store.sync()

    async def _accept(self, inbound: Inbound, expect: bool) -> Accepted | None:
        if self._closing:
            raise StoreUnavailable("shutting down")
        await self.start()
        async with self._ingest_lock(inbound.key):
            # In arrival order within this process: concurrent deliveries of one chat get their
            # ids (and their turns) in the order they came in.
            chat = ChatAddress(inbound.channel, inbound.chat_key, inbound.thread)
            # Nothing of the chat queued: its turn can be read with the message, saving it a
            # transaction (one process only; see LocalTurnQueue.is_idle).
            prefetch = self._history_limit if self.queue.is_idle(chat) else None
            try:
                recorded = await self.store.record_inbound(
                    inbound,
                    self.clock(),
                    timedelta(minutes=self.config.idle_minutes),
                    prefetch,
                    self.config.max_edits,
                    self.config.merge_messages,
                )
            except IntegrityError:
                # Another process stored the same event between our check and our insert.
                recorded = None
            if recorded is None:
                self.counters.dedup_hits += 1
                log.info(
                    "duplicate delivery ignored",
                    extra={"channel": inbound.channel, "event_id": inbound.event_id},
                )
                return None
            future = self.waiters.expect(recorded.message_id) if expect else None
            if recorded.ignored:
                log.info("edit past the limit stored, not answered")
                if future is not None:
                    self.waiters.resolve(
                        TurnOutcome(
                            recorded.message_id,
                            recorded.conversation_id,
                            None,
                            None,
                            MessageStatus.IGNORED,
                        )
                    )
                return Accepted(recorded, future)
            try:
                await self.queue.defer(
                    TurnJob(recorded.chat, recorded.message_id, loaded=recorded.loaded)
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Stored is what counts: recovery queues the turn of a message that has none.
                log.warning("turn of message %d not queued yet: %s", recorded.message_id, exc)
        return Accepted(recorded, future)

    async def outcome_of(self, message_id: int) -> TurnOutcome:
        """Wait for a stored message's turn, wherever it runs (a retried API call)."""
        future = self.waiters.expect(message_id)
        await self.waiters.check([message_id])
        return await asyncio.shield(future)

    async def find_event(self, channel: str, event_id: str) -> Recorded | None:
        return await self.store.find_event(channel, event_id)

    @contextlib.asynccontextmanager
    async def _ingest_lock(self, key: tuple[str, str, str]) -> AsyncIterator[None]:
        lock = self._ingest_locks.setdefault(key, asyncio.Lock())
        self._ingest_users[key] = self._ingest_users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._ingest_users[key] -= 1
            if not self._ingest_users[key]:
                del self._ingest_users[key]
                del self._ingest_locks[key]

    # -- the turn ------------------------------------------------------------------------------

    async def run_turn(self, job: TurnJob) -> None:
        """A job of the chat's turn queue: send what the chat has pending, then answer its
        oldest messages until the job's own message is answered (or, on a queue that drains
        chats, until none is left: the later messages' jobs then find nothing to do, and nothing
        waits for a worker to notice that the chat's lock is free again). Runs one at a time per
        chat, so everything read here is current."""
        drains = self.queue.drains_chats
        chat, loaded = job.chat, job.loaded
        while True:
            if loaded is not None:
                (chat, data, pending), loaded = loaded, None
            else:
                chat, data, pending = await self.store.load_turn(
                    chat,
                    self._history_limit,
                    self.config.merge_messages,
                    job.message_id,
                    job.outbox_id,
                )
            if chat is None:
                return  # its conversation was deleted
            clear = await self.outbox.flush(pending) if pending else True
            if data is None or job.message_id is None:
                return
            if not drains and data.message_ids[0] > job.message_id:
                return  # answered already, with the messages before it
            try:
                await self._answer(data, clear)
            except TurnAlreadyAnswered as exc:
                log.warning("turn run twice; its reply dropped: %s", exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(data, exc)
                # Given up: on to the chat's next message.
            if not drains and data.message_ids[-1] >= job.message_id:
                return

    async def _answer(self, data: TurnData, clear: bool) -> None:
        started = time.perf_counter()
        target = Target(data.channel, data.chat_key, data.thread, data.platform_message_id)
        port = self.outbox.ports.get(data.channel)
        turn = Turn(data, command_of(data), target, port, may_stream=clear)
        try:
            decision = await self.chain.route(turn)
            result = decision.result
            if turn.heard is not None and result is not None and turn.live is None:
                # A short or uncertain transcript is said back, so a mishearing shows.
                heard = tr(
                    self.scripted.language(result.state), 'You said: "{text}"', text=turn.heard
                )
                result.reply = replace(result.reply, text=f"{heard}\n\n{result.reply.text}")
            reply, persisted = await self._persist(turn, decision, clear, started)
        except BaseException as exc:
            if turn.live is not None:
                await turn.live.abort(exc)
            raise
        status = MessageStatus.IGNORED if result is None else MessageStatus.ANSWERED
        if persisted is not None and persisted.outbox_id is not None and reply is not None:
            item = _item(data, persisted, reply)
            if turn.live is not None:
                await self._finish_stream(turn.live, reply, item, persisted.delivered)
            elif persisted.delivered:
                await self.outbox.show(item)
            elif persisted.sending:
                await self.outbox.send(item)
        elif turn.live is not None:
            await turn.live.abort(RuntimeError("no reply for this turn"))
        for post_id in persisted.posts if persisted else ():
            await self.outbox.send_loose(post_id)
        if result is not None and (result.wants_human or result.lead is not None):
            await self._request_handoff(data.conversation_id, result)
        self.counters.turns += 1
        self.counters.latencies.append(time.perf_counter() - started)
        self.waiters.resolve(
            TurnOutcome(
                data.message_id,
                data.conversation_id,
                reply,
                persisted.reply_id if persisted else None,
                status,
            ),
            data.message_ids,
        )

    async def _persist(
        self, turn: Turn, decision: Decision, clear: bool, started: float
    ) -> tuple[Reply | None, Persisted | None]:
        data, result = turn.data, decision.result
        if result is None:
            persisted = await self.store.persist_turn(
                data, Answer(None, data.state, {}, posts=decision.posts), self.clock(), False
            )
            return None, persisted
        reply, state = result.reply, dict(result.state)
        # A reply keyboard asking for the contact stays until a later reply takes it away.
        if reply.request_contact:
            state[CONTACT_KEYBOARD] = True
        elif data.state.get(CONTACT_KEYBOARD):
            reply = Reply(reply.text, reply.choices, reply.citations, reply.request_contact, True)
            state.pop(CONTACT_KEYBOARD, None)
        meta = dict(result.meta)
        meta.setdefault("latency_ms", round((time.perf_counter() - started) * 1000, 2))
        self.counters.prompt_tokens += int(meta.get("prompt_tokens") or 0)
        self.counters.completion_tokens += int(meta.get("completion_tokens") or 0)
        if reply.citations:
            meta["citations"] = [c.as_dict() for c in reply.citations]
        if reply.choices:
            meta["choices"] = [{"label": c.label, "value": c.value} for c in reply.choices]
        if reply.document is not None:
            meta["document"] = reply.document.payload()  # what the customer was sent
        close = meta.get("close")
        answer = Answer(
            reply.text,
            state,
            meta,
            summary=result.summary,
            lead=result.lead,
            close_reason=str(close) if close else None,
            payload=reply.payload(),
            posts=decision.posts,
        )
        # Behind an item waiting out a retry-after, the reply waits too (the chat's flush
        # sends it), so nothing of a chat overtakes anything.
        delivered = bool(getattr(turn.port, "delivered_when_stored", False))
        persisted = await self.store.persist_turn(data, answer, self.clock(), clear, delivered)
        return reply, persisted

    async def _finish_stream(
        self, live: LiveReply, reply: Reply, item: OutboxRow, delivered: bool
    ) -> None:
        live.resolve(reply)
        status, error = OutboxStatus.SENT, None
        assert live.delivery is not None
        try:
            await live.delivery
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status, error = OutboxStatus.FAILED, str(exc)[:500]
            log.exception("streamed delivery failed", extra={"reply_id": item.message_id})
        if not delivered:
            await self.store.mark_outbox(item.id, item.message_id, status, self.clock(), error)

    async def _failed(self, data: TurnData, exc: Exception) -> None:
        """A turn raised. Counted against its messages: retried (the job raises, the queue
        tries again with backoff) until ``max_turn_attempts``, then given up with an apology,
        so one bad message never blocks its chat."""
        self.counters.errors += 1
        log.error(
            "turn failed",
            exc_info=exc,
            extra={"message_id": data.message_id, "conversation_id": data.conversation_id},
        )
        gave_up = await self.store.record_failure(
            data.message_ids, self.clock(), self.config.max_turn_attempts
        )
        if not gave_up:
            raise exc
        self.waiters.resolve(
            TurnOutcome(data.message_id, data.conversation_id, None, None, MessageStatus.FAILED),
            data.message_ids,
        )
        added = await self.store.add_outbound(
            Outbound(
                data.conversation_id,
                "bot",
                tr(self.scripted.language(data.state), GAVE_UP),
                "notice",
                {"notice": "gave_up"},
            ),
            self.clock(),
        )
        if added is not None:
            await self.outbox.flush_chat(data.chat)

    async def _request_handoff(self, conversation_id: int, result: AgentResult) -> None:
        """The customer asked for a person or left a lead: open a handoff. The reply is already
        out, so a failure here is logged; a handoff stored without its card is posted by the
        handoff timer."""
        if self.handoff is None:
            return
        reason = "human" if result.wants_human else "lead"
        try:
            await self.handoff.request(conversation_id, reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handoff not opened", extra={"conversation_id": conversation_id})

    async def close_conversation(
        self, channel: str, chat_key: str, thread: str = "", reason: str = "closed"
    ) -> bool:
        """Close a chat's open conversation, e.g. with reason "blocked" when the customer
        blocked the bot. ``False`` when none was open."""
        async with self.db.transaction() as session:
            conversation = await repo.open_conversation(session, channel, chat_key, thread)
            if conversation is None:
                return False
            repo.close(conversation, reason, self.clock())
        return True

    # -- recovery ----------------------------------------------------------------------------------

    async def recover(self, *, startup: bool = False, wait: bool = False) -> int:
        """Queue the turns a crash (or a lost job) left behind, send what was persisted and
        never sent, and give up items a dead process was sending. Safe beside running workers:
        every job it queues is one the chat's lock orders and its queueing lock deduplicates.
        Returns how many chats had unanswered messages; with ``wait``, once they are answered."""
        now = self.clock()
        await self.start()
        grace = 0.0 if startup else self.config.sweep_grace_seconds
        # One process on SQLite: at startup, anything "sending" was the previous run's.
        stale = (
            now
            if startup and self.db.is_sqlite
            else now - timedelta(seconds=self.config.send_deadline_seconds)
        )
        backlog = await self.store.find_backlog(now - timedelta(seconds=grace), stale)
        if backlog.abandoned:
            log.warning(
                "%d message(s) were being sent when a process stopped: marked unknown, "
                "not sent again",
                backlog.abandoned,
            )
        futures = []
        for chat, message_id in backlog.unanswered:
            if wait:
                futures.append(self.waiters.expect(message_id))
            await self.queue.defer(TurnJob(chat, message_id))
        for chat, outbox_id in backlog.chats_to_flush:
            await self.queue.defer(TurnJob(chat, outbox_id=outbox_id))
        for item_id in backlog.loose_items:
            await self.outbox.send_loose(item_id)
        if futures:
            log.info("recovering %d chat(s) with unanswered messages", len(futures))
            await asyncio.gather(*futures, return_exceptions=True)
        return len(backlog.unanswered)

    async def keep_recovering(self, every: float = 30.0) -> None:
        """Run ``recover`` every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.recover()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the next sweep tries again
                log.warning("recovery sweep failed: %s", exc)


def _item(data: TurnData, persisted: Persisted, reply: Reply) -> OutboxRow:
    assert persisted.outbox_id is not None
    return OutboxRow(
        id=persisted.outbox_id,
        conversation_id=data.conversation_id,
        message_id=persisted.reply_id,
        channel=data.channel,
        chat_key=data.chat_key,
        thread=data.thread,
        reply_to=data.platform_message_id,
        payload=reply.payload(),
        status=OutboxStatus.SENDING,
        not_before=None,
    )

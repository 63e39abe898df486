"""The turn pipeline: record, order, route, answer, persist, deliver.

``ConversationService.handle`` is the one entry point every channel calls. It stores the inbound
message (deduplicated on the channel's event id) before doing anything else, then runs one turn at
a time per conversation in arrival order, and marks the message answered only once the reply is
persisted. ``recover`` answers whatever a crash left unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text

from core.agent.base import Agent, AgentResult, TurnContext
from core.agent.scripted import ScriptedAgent
from core.errors import StoreUnavailable
from core.messages import MAX_TEXT_CHARS, Inbound, Reply, Target, utcnow
from core.ports import OutboundPort
from core.store import repository as repo
from core.store.database import Database
from core.store.models import Conversation, ConversationStatus, Message, MessageStatus, User

log = logging.getLogger(__name__)

Key = tuple[str, str, str]


@dataclass(frozen=True)
class ServiceConfig:
    idle_minutes: int = 30
    history_messages: int = 20
    max_text_chars: int = MAX_TEXT_CHARS
    # Persona per channel: the sales team's Slack gets the internal assistant.
    personas: dict[str, str] = field(default_factory=lambda: {"slack": "sales"})


@dataclass(frozen=True)
class TurnOutcome:
    message_id: int
    conversation_id: int
    reply: Reply | None
    reply_id: int | None


@dataclass
class _Pending:
    message_id: int
    welcome_back: bool
    future: asyncio.Future[TurnOutcome]
    inbound: Inbound | None = None


@dataclass
class _Queue:
    items: deque[_Pending] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


@dataclass
class Counters:
    """Process-local figures for /metrics and admin stats."""

    turns: int = 0
    dedup_hits: int = 0
    fallbacks: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))


class ConversationService:
    def __init__(
        self,
        db: Database,
        agent: Agent,
        scripted: ScriptedAgent,
        config: ServiceConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.agent = agent
        self.scripted = scripted
        self.config = config or ServiceConfig()
        self.clock = clock
        self.ports: dict[str, OutboundPort] = {}
        self.counters = Counters()
        self._ingest_locks: dict[Key, asyncio.Lock] = {}
        self._ingest_users: dict[Key, int] = {}
        self._queues: dict[Key, _Queue] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- wiring ------------------------------------------------------------------------------

    def register_channel(self, name: str, port: OutboundPort) -> None:
        self.ports[name] = port

    @property
    def queued(self) -> int:
        return sum(len(q.items) for q in self._queues.values())

    # -- entry point -------------------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> TurnOutcome | None:
        """Record ``inbound`` and answer it in its conversation's order. Returns ``None`` for a
        duplicate delivery. Raises ``StoreUnavailable`` when the message could not be stored."""
        if self._closing:
            raise StoreUnavailable("shutting down")
        key = inbound.key
        async with self._ingest_lock(key):
            async with self.db.transaction() as session:
                recorded = await repo.record_inbound(
                    session, inbound, self.clock(), timedelta(minutes=self.config.idle_minutes)
                )
            if recorded is None:
                self.counters.dedup_hits += 1
                log.info(
                    "duplicate delivery ignored",
                    extra={"channel": inbound.channel, "event_id": inbound.event_id},
                )
                return None
            # Enqueued before the ingest lock is released, so queue order is arrival order.
            future = self._enqueue(key, recorded.message_id, recorded.welcome_back, inbound)
        return await future

    @contextlib.asynccontextmanager
    async def _ingest_lock(self, key: Key) -> AsyncIterator[None]:
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

    def _enqueue(
        self, key: Key, message_id: int, welcome_back: bool, inbound: Inbound | None
    ) -> asyncio.Future[TurnOutcome]:
        future: asyncio.Future[TurnOutcome] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(key, _Queue())
        queue.items.append(_Pending(message_id, welcome_back, future, inbound))
        if queue.worker is None:
            queue.worker = asyncio.create_task(self._drain(key, queue), name=f"turns:{key}")
            self._workers.add(queue.worker)
            queue.worker.add_done_callback(self._workers.discard)
        return future

    async def _drain(self, key: Key, queue: _Queue) -> None:
        try:
            while queue.items:
                pending = queue.items[0]
                try:
                    outcome = await self._turn(pending)
                except asyncio.CancelledError:
                    pending.future.cancel()
                    raise
                except Exception as exc:
                    # The message stays "received" and is answered again by recover().
                    self.counters.errors += 1
                    log.exception("turn failed", extra={"message_id": pending.message_id})
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                else:
                    if not pending.future.done():
                        pending.future.set_result(outcome)
                queue.items.popleft()
        finally:
            for pending in queue.items:
                pending.future.cancel()
            if self._queues.get(key) is queue:
                del self._queues[key]

    # -- one turn ------------------------------------------------------------------------------

    async def _turn(self, pending: _Pending) -> TurnOutcome:
        started = time.perf_counter()
        async with self.db.transaction() as session:
            message = await session.get(Message, pending.message_id)
            if message is None:
                raise LookupError(f"message {pending.message_id} vanished")
            conversation = await session.get(Conversation, message.conversation_id)
            assert conversation is not None
            if message.status != MessageStatus.RECEIVED:
                # Another process (or an earlier run) already answered it.
                return TurnOutcome(message.id, conversation.id, None, None)
            user = await session.get(User, conversation.user_id) if conversation.user_id else None
            history = await repo.history(
                session, conversation.id, message.id, self.config.history_messages
            )
        target = Target(conversation.channel, conversation.chat_key, conversation.thread)
        port = self.ports.get(conversation.channel)

        async with self._cross_process_lock(conversation.id):
            result = await self._route(message, conversation, user, history, pending, port, target)
            reply_id = await self._persist(message, conversation, user, result, started)
        if result is not None and port is not None:
            await self._deliver(port, target, result.reply, reply_id)
        self.counters.turns += 1
        self.counters.latencies.append(time.perf_counter() - started)
        return TurnOutcome(message.id, conversation.id, result.reply if result else None, reply_id)

    @contextlib.asynccontextmanager
    async def _cross_process_lock(self, conversation_id: int) -> AsyncIterator[None]:
        """One turn at a time per conversation across processes. Postgres: an advisory lock held
        on its own connection for the turn. SQLite is single-writer already."""
        if not self.db.is_postgres:
            yield
            return
        async with self.db.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": conversation_id})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": conversation_id})
                await conn.commit()

    async def _route(
        self,
        message: Message,
        conversation: Conversation,
        user: User | None,
        history: tuple[Any, ...],
        pending: _Pending,
        port: OutboundPort | None,
        target: Target,
    ) -> AgentResult | None:
        if user is not None and user.banned:
            return None
        if conversation.paused or conversation.status == ConversationStatus.HANDOFF:
            return None
        state = dict(conversation.state or {})
        inbound = pending.inbound
        command = inbound.command if inbound is not None else None
        if command is None and message.text.startswith("/"):
            from core.messages import parse_command

            command = parse_command(message.text)
        if len(message.text) > self.config.max_text_chars:
            return AgentResult(
                Reply(
                    f"That message is too long for me ({len(message.text):,} characters; the "
                    f"limit is {self.config.max_text_chars:,}). Please send a shorter one."
                ),
                state,
            )
        if command is not None:
            handled = self._customer_command(command.name, state, conversation)
            if handled is not None:
                return handled
        if not message.text.strip():
            attachments = (message.meta or {}).get("attachments")
            if attachments:
                return AgentResult(
                    Reply(
                        "Thanks! I can only read text messages, so I can't open that "
                        f"{attachments[0]}. Please type your question and I'll help."
                    ),
                    state,
                )
            return AgentResult(Reply("I didn't catch any text there. How can I help?"), state)
        ctx = TurnContext(
            conversation_id=conversation.id,
            channel=conversation.channel,
            text=message.text,
            state=state,
            history=history,
            sender_name=user.display_name if user else None,
            contact_phone=(inbound.contact_phone if inbound else None)
            or (user.phone if user and (message.meta or {}).get("contact_shared") else None),
            persona=self.config.personas.get(conversation.channel, "customer"),
        )
        if port is not None:
            with contextlib.suppress(Exception):
                await port.typing(target)
        try:
            result = await self.agent.respond(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            if self.agent is self.scripted:
                raise
            # The LLM agent already falls back internally; this is the last line of defence.
            self.counters.fallbacks += 1
            log.exception("agent failed; scripted agent answers")
            result = await self.scripted.respond(ctx)
            result.meta["fallback"] = True
        if pending.welcome_back and not result.reply.text.startswith("Welcome back"):
            reply = result.reply
            result.reply = Reply(
                "Welcome back! " + reply.text, reply.choices, reply.citations, reply.request_contact
            )
        return result

    def _customer_command(
        self, name: str, state: dict[str, Any], conversation: Conversation
    ) -> AgentResult | None:
        if name == "start":
            return AgentResult(self.scripted.greeting(), {"stage": "need"})
        if name == "help":
            return AgentResult(self.scripted.help(), state)
        if name == "reset":
            result = AgentResult(
                Reply(
                    "Done: I've cleared our conversation. Say hi whenever you're ready, or tell "
                    "me which loan you need."
                ),
                {},
            )
            result.meta["close"] = "reset"
            return result
        if name == "human":
            return self.scripted.ask_consent(state, wants_human=True)
        return AgentResult(
            Reply(f"Sorry, I don't know the command /{name}. Type /help to see what I can do."),
            state,
        )

    async def _persist(
        self,
        message: Message,
        conversation: Conversation,
        user: User | None,
        result: AgentResult | None,
        started: float,
    ) -> int | None:
        now = self.clock()
        async with self.db.transaction() as session:
            conv = await session.get(Conversation, conversation.id)
            msg = await session.get(Message, message.id)
            assert conv is not None and msg is not None
            if msg.status != MessageStatus.RECEIVED:
                return None
            msg.answered_at = now
            if result is None:
                msg.status = MessageStatus.IGNORED
                return None
            msg.status = MessageStatus.ANSWERED
            conv.state = result.state
            conv.last_activity_at = now
            meta = dict(result.meta)
            meta.setdefault("latency_ms", round((time.perf_counter() - started) * 1000, 2))
            if result.reply.citations:
                meta["citations"] = [c.as_dict() for c in result.reply.citations]
            if result.reply.choices:
                meta["choices"] = [
                    {"label": c.label, "value": c.value} for c in result.reply.choices
                ]
            if result.lead is not None:
                lead = repo.add_lead(session, result.lead, conv.id, conv.user_id, now)
                await session.flush()
                meta["lead_id"] = lead.id
                if user is not None and not user.phone:
                    db_user = await session.get(User, user.id)
                    if db_user is not None:
                        db_user.phone = result.lead.phone
            out = Message(
                conversation_id=conv.id,
                channel=conv.channel,
                direction="out",
                author="bot",
                text=result.reply.text,
                status=MessageStatus.PENDING,
                created_at=now,
                reply_to_id=msg.id,
                meta=meta,
            )
            session.add(out)
            if meta.get("close"):
                repo.close(conv, str(meta["close"]), now)
            await session.flush()
            return out.id

    async def _deliver(
        self, port: OutboundPort, target: Target, reply: Reply, reply_id: int | None
    ) -> None:
        status = MessageStatus.SENT
        try:
            await port.send(target, reply)
        except asyncio.CancelledError:
            raise
        except Exception:
            status = MessageStatus.FAILED
            log.exception("delivery failed", extra={"reply_id": reply_id})
        if reply_id is not None:
            async with self.db.transaction() as session:
                out = await session.get(Message, reply_id)
                if out is not None:
                    out.status = status

    # -- recovery and shutdown ------------------------------------------------------------------

    async def recover(self, channels: list[str] | None = None) -> int:
        """Answer inbound messages a crash left unanswered and deliver replies left pending.
        Returns how many inbound messages were answered."""
        names = channels if channels is not None else list(self.ports)
        if not names:
            return 0
        async with self.db.transaction() as session:
            undelivered = await repo.undelivered(session, names)
            pending = await repo.unanswered(session, names)
        for out in undelivered:
            conv_target = await self._target_of(out.conversation_id)
            port = self.ports.get(out.channel)
            if port is not None and conv_target is not None:
                reply = Reply(out.text)
                await self._deliver(port, conv_target, reply, out.id)
        futures = []
        for message_id, channel, chat_key, thread in pending:
            futures.append(self._enqueue((channel, chat_key, thread), message_id, False, None))
        answered = 0
        for future in futures:
            try:
                outcome = await future
            except Exception:
                log.exception("recovery turn failed")
                continue
            answered += outcome.reply_id is not None
        if futures:
            log.info("recovered %d unanswered message(s)", len(futures))
        return answered

    async def _target_of(self, conversation_id: int) -> Target | None:
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(Conversation.channel, Conversation.chat_key, Conversation.thread).where(
                        Conversation.id == conversation_id
                    )
                )
            ).first()
        return Target(row[0], row[1], row[2]) if row else None

    async def aclose(self) -> None:
        """Stop taking messages and let turns in flight finish."""
        self._closing = True
        if self._workers:
            await asyncio.gather(*list(self._workers), return_exceptions=True)

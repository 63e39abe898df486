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
from typing import Any, Protocol, TypeGuard

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from core.agent.base import Agent, AgentResult, StreamingAgent, TurnContext
from core.agent.scripted import ScriptedAgent
from core.errors import AgentError, StoreUnavailable
from core.messages import MAX_TEXT_CHARS, Command, Inbound, Reply, Target, parse_command, utcnow
from core.ports import OutboundPort, StreamingPort
from core.store import repository as repo
from core.store import turns
from core.store.database import Database
from core.store.models import Conversation, ConversationStatus, MessageStatus, User
from core.store.turns import TurnData

log = logging.getLogger(__name__)

Key = tuple[str, str, str]


@dataclass(frozen=True)
class ServiceConfig:
    idle_minutes: int = 30
    history_messages: int = 20
    max_text_chars: int = MAX_TEXT_CHARS
    # Persona per channel: the sales team's Slack gets the internal assistant.
    personas: dict[str, str] = field(default_factory=lambda: {"slack": "sales"})


class AdminHook(Protocol):
    """Admin commands (core.admin.AdminService), routed before anything else but bans."""

    def handles(self, name: str) -> bool: ...

    async def run_command(
        self, channel: str, sender_id: str, command: Command, chat_key: str
    ) -> Reply: ...


class HandoffHook(Protocol):
    """The human handoff (core.handoff.HandoffService)."""

    async def request(self, conversation_id: int, reason: str) -> int | None: ...

    async def relay_from_customer(self, turn: TurnData) -> bool: ...


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
    live: _LiveReply | None = None
    turn: TurnData | None = None


class _LiveReply:
    """The ``ReplyStream`` a streaming channel renders while the agent writes. Deltas flow as
    they come; ``final()`` resolves only once the whole reply is persisted, so what the channel
    leaves on screen is exactly what the database holds."""

    def __init__(self) -> None:
        self._deltas: asyncio.Queue[str | None] = asyncio.Queue()
        self._final: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.delivery: asyncio.Task[None] | None = None

    def push(self, delta: str) -> None:
        self._deltas.put_nowait(delta)

    def end_deltas(self) -> None:
        self._deltas.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            delta = await self._deltas.get()
            if delta is None:
                self._deltas.put_nowait(None)  # a second iteration ends at once too
                return
            yield delta

    async def final(self) -> Reply:
        return await asyncio.shield(self._final)

    def resolve(self, reply: Reply) -> None:
        self.end_deltas()
        if not self._final.done():
            self._final.set_result(reply)

    async def abort(self, exc: BaseException) -> None:
        """The turn failed after the channel started rendering: let the channel's stream end
        and collect its outcome so no task is left behind."""
        self.end_deltas()
        if not self._final.done():
            self._final.set_exception(AgentError(f"the turn failed: {exc!r}"))
            self._final.exception()  # retrieved here: the channel may never ask for it
        if self.delivery is not None:
            await asyncio.gather(self.delivery, return_exceptions=True)


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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))


# ``isinstance`` against a runtime-checkable protocol inspects the protocol's members each time,
# and these checks run on every turn: remember the answer per class.
_STREAMING: dict[tuple[type, type], bool] = {}


def _conforms(obj: object, protocol: type) -> bool:
    key = (type(obj), protocol)
    if key not in _STREAMING:
        _STREAMING[key] = isinstance(obj, protocol)
    return _STREAMING[key]


def _streaming_port(port: OutboundPort | None) -> TypeGuard[StreamingPort]:
    return port is not None and _conforms(port, StreamingPort)


def _streaming_agent(agent: Agent) -> TypeGuard[StreamingAgent]:
    return _conforms(agent, StreamingAgent)


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
        # Set by the composition root: admin commands, and the human handoff.
        self.admin: AdminHook | None = None
        self.handoff: HandoffHook | None = None

    # -- wiring ------------------------------------------------------------------------------

    def register_channel(self, name: str, port: OutboundPort) -> None:
        self.ports[name] = port

    @property
    def _history_limit(self) -> int:
        # The scripted agent keeps its state in the conversation and reads no history.
        return self.config.history_messages if self.agent is not self.scripted else 0

    @property
    def queued(self) -> int:
        return sum(len(q.items) for q in self._queues.values())

    # -- entry point -------------------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> TurnOutcome | None:
        """Record ``inbound`` and answer it in its conversation's order. Returns ``None`` for a
        duplicate delivery. Raises ``StoreUnavailable`` when the message could not be stored."""
        future = await self.accept(inbound)
        return None if future is None else await future

    async def accept(self, inbound: Inbound) -> asyncio.Future[TurnOutcome] | None:
        """Store ``inbound`` and queue its turn, returning the turn's future (``None`` for a
        duplicate). For channels that must acknowledge a delivery only once it is stored, and
        not wait for the answer."""
        if self._closing:
            raise StoreUnavailable("shutting down")
        key = inbound.key
        async with self._ingest_lock(key):
            # With no turn running or queued for this conversation, the turn starts as soon as
            # the message is stored, so read its data in the same transaction. Only on SQLite:
            # there no other process can run a turn in between and make the read stale.
            prefetch = (
                self._history_limit if self.db.is_sqlite and key not in self._queues else None
            )
            try:
                recorded = await self.db.run_core(
                    turns.record_inbound,
                    inbound,
                    self.clock(),
                    timedelta(minutes=self.config.idle_minutes),
                    prefetch,
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
            # Enqueued before the ingest lock is released, so queue order is arrival order.
            return self._enqueue(
                key, recorded.message_id, recorded.welcome_back, inbound, recorded.turn
            )

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
        self,
        key: Key,
        message_id: int,
        welcome_back: bool,
        inbound: Inbound | None,
        turn: TurnData | None = None,
    ) -> asyncio.Future[TurnOutcome]:
        future: asyncio.Future[TurnOutcome] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(key, _Queue())
        queue.items.append(_Pending(message_id, welcome_back, future, inbound, turn=turn))
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
        turn = pending.turn or await self.db.run_core(
            turns.load_turn, pending.message_id, self._history_limit
        )
        if turn is None:
            raise LookupError(f"message {pending.message_id} vanished")
        if turn.message_status != MessageStatus.RECEIVED:
            # Another process (or an earlier run) already answered it.
            return TurnOutcome(turn.message_id, turn.conversation_id, None, None)
        target = Target(turn.channel, turn.chat_key, turn.thread)
        port = self.ports.get(turn.channel)

        try:
            async with self._cross_process_lock(turn.conversation_id):
                result = await self._route(turn, pending, port, target)
                reply_id = await self._persist(turn, result, started)
        except BaseException as exc:
            if pending.live is not None:
                await pending.live.abort(exc)
            raise
        if pending.live is not None:
            await self._finish_stream(pending.live, result, reply_id)
        elif result is not None and port is not None:
            await self._deliver(port, target, result.reply, reply_id)
        if result is not None and (result.wants_human or result.lead is not None):
            await self._request_handoff(turn.conversation_id, result)
        self.counters.turns += 1
        self.counters.latencies.append(time.perf_counter() - started)
        return TurnOutcome(
            turn.message_id, turn.conversation_id, result.reply if result else None, reply_id
        )

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
        self, turn: TurnData, pending: _Pending, port: OutboundPort | None, target: Target
    ) -> AgentResult | None:
        if turn.user_banned:
            return None  # stored, never answered, and no LLM call
        state = turn.state
        inbound = pending.inbound
        command = inbound.command if inbound is not None else parse_command(turn.text)
        if command is not None and self.admin is not None and self.admin.handles(command.name):
            # Before the pause checks: a paused bot must still take "resume".
            reply = await self.admin.run_command(
                turn.channel, turn.user_external_id or "", command, turn.chat_key
            )
            return AgentResult(reply, state, meta={"admin": command.name})
        if turn.paused or turn.bot_paused:
            return None
        if turn.conversation_status == ConversationStatus.HANDOFF and (
            self.handoff is None or await self.handoff.relay_from_customer(turn)
        ):
            return None
        if command is not None and command.name in ("subscribe", "unsubscribe"):
            return await self._opt_in(turn, command.name == "subscribe")
        if len(turn.text) > self.config.max_text_chars:
            return AgentResult(
                Reply(
                    f"That message is too long for me ({len(turn.text):,} characters; the "
                    f"limit is {self.config.max_text_chars:,}). Please send a shorter one."
                ),
                state,
            )
        if command is not None:
            handled = self._customer_command(command.name, state)
            if handled is not None:
                return handled
        if not turn.text.strip():
            attachments = turn.meta.get("attachments")
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
            conversation_id=turn.conversation_id,
            channel=turn.channel,
            text=turn.text,
            state=state,
            history=turn.history,
            sender_name=turn.user_name,
            contact_phone=(inbound.contact_phone if inbound else None)
            or (turn.user_phone if turn.meta.get("contact_shared") else None),
            persona=self.config.personas.get(turn.channel, "customer"),
            summary=turn.summary,
        )
        if port is not None:
            with contextlib.suppress(Exception):
                await port.typing(target)
        try:
            result = await self._ask_agent(ctx, port, target, pending)
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

    async def _ask_agent(
        self, ctx: TurnContext, port: OutboundPort | None, target: Target, pending: _Pending
    ) -> AgentResult:
        """Stream when both the channel and the agent can; otherwise one whole reply."""
        agent = self.agent
        if not (_streaming_port(port) and _streaming_agent(agent)):
            return await agent.respond(ctx)
        live = pending.live = _LiveReply()
        live.delivery = asyncio.create_task(port.stream(target, live), name="reply-stream")
        result: AgentResult | None = None
        try:
            async for item in agent.stream(ctx):
                if isinstance(item, AgentResult):
                    result = item
                else:
                    live.push(item)
        finally:
            live.end_deltas()
        if result is None:
            raise AgentError("the agent's stream ended without a result")
        result.meta["streamed"] = True
        return result

    async def _finish_stream(
        self, live: _LiveReply, result: AgentResult | None, reply_id: int | None
    ) -> None:
        if result is None:
            await live.abort(AgentError("no reply for this turn"))
            return
        live.resolve(result.reply)
        status = MessageStatus.SENT
        assert live.delivery is not None
        try:
            await live.delivery
        except asyncio.CancelledError:
            raise
        except Exception:
            status = MessageStatus.FAILED
            log.exception("streamed delivery failed", extra={"reply_id": reply_id})
        if reply_id is not None:
            await self.db.run_core(turns.set_delivery, reply_id, status)

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

    async def _opt_in(self, turn: TurnData, on: bool) -> AgentResult:
        """/subscribe and /unsubscribe: whether admin broadcasts reach this customer."""
        if turn.user_id is not None:
            async with self.db.transaction() as session:
                await session.execute(
                    update(User).where(User.id == turn.user_id).values(broadcast_opt_in=on)
                )
        text = (
            "Done: you'll receive our occasional announcements. Send /unsubscribe to stop."
            if on
            else "Done: you won't receive announcements any more. Send /subscribe to resume."
        )
        return AgentResult(Reply(text), turn.state)

    def _customer_command(self, name: str, state: dict[str, Any]) -> AgentResult | None:
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
        self, turn: TurnData, result: AgentResult | None, started: float
    ) -> int | None:
        if result is None:
            answer = turns.Answer(None, turn.state, {})
        else:
            meta = dict(result.meta)
            meta.setdefault("latency_ms", round((time.perf_counter() - started) * 1000, 2))
            self.counters.prompt_tokens += int(meta.get("prompt_tokens") or 0)
            self.counters.completion_tokens += int(meta.get("completion_tokens") or 0)
            if result.reply.citations:
                meta["citations"] = [c.as_dict() for c in result.reply.citations]
            if result.reply.choices:
                meta["choices"] = [
                    {"label": c.label, "value": c.value} for c in result.reply.choices
                ]
            close = meta.get("close")
            answer = turns.Answer(
                result.reply.text,
                result.state,
                meta,
                summary=result.summary,
                lead=result.lead,
                close_reason=str(close) if close else None,
            )
        return await self.db.run_core(turns.persist_turn, turn, answer, self.clock())

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
            await self.db.run_core(turns.set_delivery, reply_id, status)

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

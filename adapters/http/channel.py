"""The web channel: the REST and WebSocket API a website's chat uses, on the core's ports.

A session id (unguessable, bound to the API key that created it) is the conversation's chat key.
Messages from REST and from WebSockets go through the same ``ConversationService.handle`` as any
other channel: stored first, deduplicated on the client's message id, one turn at a time. Replies
fan out to every WebSocket open on the session (deltas while the agent writes, then the whole
reply); a REST call gets its reply in the response.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.conversation import ConversationService, TurnOutcome
from core.errors import ChatEnded, StoreUnavailable
from core.fanout import FanOut, LocalFanOut, Subscription
from core.knowledge.types import Hit
from core.messages import (
    Attachment,
    Inbound,
    QuoteDocument,
    Reply,
    Target,
    parse_command,
    utcnow,
)
from core.ports import ReplyStream
from core.ratelimit import RateLimits
from core.sessions import (
    SessionRecord,
    SessionView,
    create_session,
    end_session,
    find_session,
    session_view,
)
from core.store import repository as repo
from core.store.database import Database
from core.store.models import Conversation, Message

from .limits import WebLimits
from .models import reply_frame
from .security import ApiKeys

if TYPE_CHECKING:
    from .uploads import VoiceUpload

log = logging.getLogger(__name__)

CHANNEL = "web"
SESSION_CACHE_TTL = 30.0
SESSION_CACHE_SIZE = 10_000
# Streamed text is sent to sockets at most this often (seconds), gathered in between.
STREAM_INTERVAL = 0.1
# The error code, and the WebSocket close code (HTTP's 410 Gone), of a session that has ended.
SESSION_ENDED = "session_ended"
CLOSE_GONE = 4410


@dataclass(frozen=True)
class WebConfig:
    # Secrets, kept out of the repr (and so out of logs and tracebacks).
    api_keys: tuple[str, ...] = field(repr=False)
    rate_limit_per_minute: int = 120
    max_body_bytes: int = 65_536
    # The key the chat page embeds for visitors (one of api_keys), or None: the page asks.
    page_key: str | None = field(default=None, repr=False)
    # The page key is public and shared by every visitor: a budget of its own, and limits per
    # chat session (messages) and per client address (every request) on top of it.
    page_key_per_minute: int = 600
    page_session_per_minute: int = 20
    page_address_per_minute: int = 60
    # How long a WebSocket may stay open without presenting a key (browsers send it first).
    auth_timeout: float = 10.0
    # How long stop() waits for turns in flight before closing sockets anyway.
    stop_timeout: float = 30.0


class ShuttingDown(Exception):
    """The channel is stopping and takes no new messages."""


@dataclass(frozen=True)
class ChatResult:
    reply: Reply | None
    message_id: int | None
    duplicate: bool
    # How the turn ended: answered, ignored (a deliberate silence) or failed (given up).
    status: str = "answered"
    # The customer's message it answers (the original one, for a retry), when known.
    inbound_id: int | None = None


def _result(outcome: TurnOutcome, duplicate: bool, inbound_id: int) -> ChatResult:
    return ChatResult(outcome.reply, outcome.reply_id, duplicate, outcome.status, inbound_id)


def ends_session(frame: dict[str, Any]) -> bool:
    """The frame that tells a session's sockets it has ended (published by whichever process
    ended it): each socket sends it on and closes."""
    return frame.get("type") == "error" and frame.get("code") == SESSION_ENDED


def ended_frame() -> dict[str, Any]:
    return {"type": "error", "code": SESSION_ENDED, "detail": ENDED}


class Socket:
    """One open WebSocket. Frames queue up and one writer sends them in order (deltas, typing
    and errors of concurrent turns never interleave), so a slow browser never holds up the
    fan-out that feeds every socket of this process. A client that reads nothing is dropped.
    After the session-ended frame the writer closes the socket with ``CLOSE_GONE``."""

    MAX_QUEUED = 1000

    def __init__(
        self,
        send_json: Callable[[dict[str, Any]], Any],
        close: Callable[[int, str], Awaitable[None]] | None = None,
    ) -> None:
        self._send_json = send_json
        self._close_socket = close
        self.ended = False
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(), name="websocket-writer")
        self.alive = True
        self.subscription: Subscription | None = None

    async def send(self, frame: dict[str, Any]) -> None:
        if not self.alive or self.ended:
            return
        if ends_session(frame):
            self.ended = True  # nothing after it: the socket closes once it is sent
        elif self._queue.qsize() >= self.MAX_QUEUED:
            self.alive = False
            return
        self._queue.put_nowait(frame)

    async def _write(self) -> None:
        while True:
            frame = await self._queue.get()
            if frame is None:
                return
            try:
                await self._send_json(frame)
                if ends_session(frame):
                    self.alive = False
                    if self._close_socket is not None:
                        await self._close_socket(CLOSE_GONE, SESSION_ENDED)
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                # The browser went away; the reply is stored and shown again on reconnect.
                self.alive = False
                return

    async def close(self, grace: float = 1.0) -> None:
        """Send what is queued (for up to ``grace`` seconds), then stop writing."""
        self.alive = False
        self._queue.put_nowait(None)
        done, _ = await asyncio.wait([self._writer], timeout=grace)
        if not done:
            self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)


def topic(session_id: str) -> str:
    """The fan-out topic of a session: its frames reach its sockets in whichever process."""
    return f"ws:{session_id}"


def session_tag(session_id: str) -> str:
    """What logs carry instead of the session id, which is as good as a password."""
    return "web:" + hashlib.sha256(session_id.encode()).hexdigest()[:12]


class WebChannel:
    """The outbound and streaming ports for channel "web", and the API behind them."""

    name = CHANNEL
    # A web client reads its replies from the store (the API's response, GET of the session, a
    # socket's reconnect): a stored reply is a delivered one, and the frames are a courtesy.
    delivered_when_stored = True

    def __init__(
        self,
        service: ConversationService,
        db: Database,
        config: WebConfig,
        knowledge: Any | None = None,
        knowledge_problem: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        *,
        limits: RateLimits | None = None,
        fanout: FanOut | None = None,
    ) -> None:
        self.service = service
        self.db = db
        self.config = config
        self.knowledge = knowledge
        self.knowledge_problem = knowledge_problem
        self.clock = clock
        self.keys = ApiKeys(config.api_keys)
        # Shared by every process when backed by Redis (one limit per key, not per process).
        self.limits = limits or RateLimits()
        self.web_limits = WebLimits(
            self.limits,
            key_per_minute=config.rate_limit_per_minute,
            page_key=config.page_key,
            page_key_per_minute=config.page_key_per_minute,
            session_per_minute=config.page_session_per_minute,
            address_per_minute=config.page_address_per_minute,
        )
        # A reply produced in any process reaches the sockets open in this one.
        self.fanout = fanout or LocalFanOut()
        self._sockets: dict[str, set[Socket]] = {}
        self._turns: set[asyncio.Task[Any]] = set()
        self._accepting = True
        self._session_cache: dict[str, tuple[SessionRecord, float]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.fanout.start()
        self._accepting = True

    async def stop(self) -> None:
        """Take no new messages, let turns in flight finish, then say goodbye to sockets."""
        self._accepting = False
        if self._turns:
            await asyncio.wait(list(self._turns), timeout=self.config.stop_timeout)
        for sockets in list(self._sockets.values()):
            for socket in list(sockets):
                await socket.send({"type": "error", "code": "shutting_down", "detail": BYE})

    def router(self) -> Any:
        from .routes import build_router

        return build_router(self)

    async def check(self) -> tuple[bool, str]:
        open_sockets = sum(len(s) for s in self._sockets.values())
        return True, f"{open_sockets} WebSocket(s) open"

    @property
    def accepting(self) -> bool:
        return self._accepting

    # -- outbound and streaming ports --------------------------------------------------------

    async def send(self, target: Target, reply: Reply) -> None:
        await self._fan_out(target.chat_key, reply_frame(reply))

    async def typing(self, target: Target) -> None:
        await self._fan_out(target.chat_key, {"type": "typing"})

    async def stream(self, target: Target, reply: ReplyStream) -> None:
        """Deltas as frames: the first at once, then gathered into one frame per
        ``STREAM_INTERVAL`` (a model writes a word a frame; each frame is a publish to every
        process when the fan-out is Redis), then the whole reply."""
        loop = asyncio.get_running_loop()
        pending, last = "", float("-inf")
        async for delta in reply:
            pending += delta
            if loop.time() - last >= STREAM_INTERVAL:
                await self._fan_out(target.chat_key, {"type": "delta", "text": pending})
                pending, last = "", loop.time()
        if pending:
            await self._fan_out(target.chat_key, {"type": "delta", "text": pending})
        await self._fan_out(target.chat_key, reply_frame(await reply.final()))

    async def _fan_out(self, session_id: str, frame: dict[str, Any]) -> None:
        await self.fanout.publish(topic(session_id), frame)

    # -- sessions ------------------------------------------------------------------------------

    async def create_session(self, owner: str) -> SessionRecord:
        session_id = secrets.token_urlsafe(24)
        now = self.clock()
        await self.db.run(create_session, session_id, owner, now)
        record = SessionRecord(session_id, owner, now, None)
        # Its first message follows at once: found here, not read back from the database.
        self._remember(record)
        return record

    async def owned_session(self, session_id: str, owner: str) -> SessionRecord | None:
        """The session if it exists and belongs to ``owner``'s key; another key's session is
        indistinguishable from one that does not exist."""
        record = self._recent_session(session_id)
        if record is None:
            record = await self.db.run(find_session, session_id)
            if record is not None and record.ended_at is None:
                self._remember(record)
        if record is None or not secrets.compare_digest(record.key_hash, owner):
            return None
        return record

    def _recent_session(self, session_id: str) -> SessionRecord | None:
        # Live sessions are looked up on every message; a short cache saves a database round
        # trip each time. Another process ending the session is seen within SESSION_CACHE_TTL.
        cached = self._session_cache.get(session_id)
        if cached is None:
            return None
        record, stored_at = cached
        if time.monotonic() - stored_at > SESSION_CACHE_TTL:
            del self._session_cache[session_id]
            return None
        return record

    def _remember(self, record: SessionRecord) -> None:
        if len(self._session_cache) >= SESSION_CACHE_SIZE:
            # Oldest first: dicts keep insertion order.
            del self._session_cache[next(iter(self._session_cache))]
        self._session_cache[record.id] = (record, time.monotonic())

    async def view(self, record: SessionRecord) -> SessionView:
        return await self.db.run(session_view, record, CHANNEL)

    async def end(self, record: SessionRecord) -> None:
        """End the session for good: the core refuses its messages from now on (in every
        process), and every socket of it, in whichever process holds it, is told and closed."""
        self._session_cache.pop(record.id, None)
        await self.db.run(end_session, record.id, CHANNEL, self.clock())
        await self._fan_out(record.id, ended_frame())

    async def _ended_elsewhere(self, session_id: str) -> None:
        # The core refused a message: the session was ended by a process whose frame never
        # reached us (or not yet). Forget it here and close its sockets everywhere.
        self._session_cache.pop(session_id, None)
        try:
            await self._fan_out(session_id, ended_frame())
        except StoreUnavailable:
            log.warning("could not tell the sockets of an ended session", exc_info=True)

    # -- messages ------------------------------------------------------------------------------

    def inbound(self, session_id: str, text: str, client_message_id: str | None) -> Inbound:
        return Inbound(
            channel=CHANNEL,
            chat_key=session_id,
            sender_id=session_id,
            text=text,
            # Namespaced by session: two clients may both number their messages from 1.
            event_id=f"{session_id}:{client_message_id}" if client_message_id else None,
            command=parse_command(text),
            awaited=True,
        )

    def voice_inbound(self, session_id: str, clip: VoiceUpload) -> Inbound:
        """A voice note: no text, the audio itself attached (stored with the message; the
        core's ``VoiceNotes`` transcribes it in the turn)."""
        voice = Attachment(
            kind="voice",
            name=clip.filename,
            mime=clip.mime,
            size=len(clip.data),
            duration=clip.duration,
            data=clip.data,
        )
        return replace(self.inbound(session_id, "", clip.client_message_id), attachments=(voice,))

    async def transcript(self, message_id: int | None) -> str | None:
        """What was heard of a stored voice note, or ``None`` (not heard, or not one)."""
        if message_id is None:
            return None
        return await self.db.run(_stored_transcript, message_id)

    async def converse(self, inbound: Inbound, *, answered_then_synced: bool = False) -> ChatResult:
        """Hand one message to the core and wait for its turn, which may run in any process.
        A retry of a message (same client message id, on any worker) waits for the same turn
        and gets its reply and message id, marked as a duplicate.

        ``answered_then_synced``: for a caller whose only acknowledgement is the answer (a REST
        response), the message is made durable once answered rather than before its turn:
        one sync then covers the message and its reply, and the turn does not wait for the
        disk. Raises ``StoreUnavailable`` (nothing acknowledged; a retry gets the reply) when
        the sync fails."""
        if not self._accepting:
            raise ShuttingDown
        task = asyncio.ensure_future(self._converse(inbound, not answered_then_synced))
        self._turns.add(task)
        task.add_done_callback(self._turns.discard)
        # Shielded: a client that disconnects does not cancel the wait; the turn answers anyway.
        return await asyncio.shield(task)

    async def _converse(self, inbound: Inbound, durable: bool) -> ChatResult:
        try:
            accepted = await self.service.accept(inbound, expect=True, durable=durable)
        except ChatEnded:
            await self._ended_elsewhere(inbound.chat_key)
            raise
        if accepted is not None:
            assert accepted.outcome is not None
            outcome = await accepted.outcome
            if not durable:
                await self.service.sync_inbound()
            return _result(outcome, duplicate=False, inbound_id=accepted.message_id)
        if inbound.event_id is None:
            return ChatResult(None, None, True)
        original = await self.service.find_event(CHANNEL, inbound.event_id)
        if original is None:  # stored a moment ago by a request that then failed
            return ChatResult(None, None, True)
        outcome = await self.service.outcome_of(original.message_id)
        if not durable:
            # The retry of a request whose sync failed: its answer is on disk before it is given.
            await self.service.sync_inbound()
        return _result(outcome, duplicate=True, inbound_id=original.message_id)

    async def subscribe(self, session_id: str, socket: Socket) -> None:
        async def deliver(frame: dict[str, Any]) -> None:
            if ends_session(frame):
                # Ended by another process: this one's cached record is stale.
                self._session_cache.pop(session_id, None)
            await socket.send(frame)

        socket.subscription = await self.fanout.subscribe(topic(session_id), deliver)
        self._sockets.setdefault(session_id, set()).add(socket)

    async def unsubscribe(self, session_id: str, socket: Socket) -> None:
        sockets = self._sockets.get(session_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._sockets[session_id]
        if socket.subscription is not None:
            await socket.subscription.close()
            socket.subscription = None

    def track(self, task: asyncio.Task[Any]) -> None:
        self._turns.add(task)
        task.add_done_callback(self._turns.discard)

    # -- quotes --------------------------------------------------------------------------------

    async def latest_quote(self, record: SessionRecord) -> QuotePdf | None:
        """The session's latest quote as a PDF, or ``None`` when its conversation has none (no
        product, amount and tenure yet). Built from the conversation's state exactly as the
        customer's /quote builds it (the same document, the same bytes), rendered on a thread,
        and the send recorded in the audit log with the figures the customer received."""
        found = await self.db.run(_latest_state, record.id)
        if found is None:
            return None
        conversation_id, state = found
        scripted = self.service.scripted
        document = scripted.quote_pdf(state, scripted.language(state)).reply.document
        if document is None:
            return None
        from core.quote import quote_pdf  # fpdf2 loads only when a PDF is made

        filename, data = await asyncio.to_thread(quote_pdf, scripted.catalogue, document)
        async with self.db.transaction() as session:
            repo.audit(
                session,
                # The session id is as good as a password: its tag, as in the logs.
                f"api:{session_tag(record.id)}",
                "quote_pdf",
                "ok",
                f"conversation:{conversation_id}",
                document.payload(),
                self.clock(),
            )
        return QuotePdf(filename, data, document)

    # -- retrieval -------------------------------------------------------------------------------

    async def search(self, query: str, k: int) -> list[Hit]:
        if self.knowledge is None:
            raise KnowledgeMissing(self.knowledge_problem or "no knowledge base is configured")
        hits: list[Hit] = await self.knowledge.search(query, k)
        return hits


@dataclass(frozen=True)
class QuotePdf:
    """A quote's PDF as sent: its file name (the reference), bytes, and what it stands for."""

    filename: str
    data: bytes
    document: QuoteDocument


def _latest_state(session: Session, session_id: str) -> tuple[int, dict[str, Any]] | None:
    """The id and state of the session's latest conversation, if it has one."""
    row = session.execute(
        select(Conversation.id, Conversation.state)
        .where(Conversation.channel == CHANNEL, Conversation.chat_key == session_id)
        .order_by(Conversation.id.desc())
        .limit(1)
    ).first()
    return (row.id, dict(row.state or {})) if row is not None else None


def _stored_transcript(session: Session, message_id: int) -> str | None:
    message = session.get(Message, message_id)
    audio = (message.meta or {}).get("audio") if message is not None else None
    heard = audio.get("transcript") if isinstance(audio, dict) else None
    return heard if isinstance(heard, str) else None


class KnowledgeMissing(Exception):
    """The API was asked for retrieval but the bot runs without a knowledge base."""


BYE = "The server is restarting. Reconnect in a moment; your conversation is kept."
ENDED = "This chat session has ended. Start a new one to keep talking."

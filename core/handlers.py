"""The turn's handler chain: each handler looks at the turn and either decides it (a reply, or a
deliberate silence) or passes it on. The composition root (``bot.runtime``) lists the chain, in
the order the rules need: bans first, admin commands before pauses (a paused bot still takes
"resume"), the human handoff before anything that would answer for the bot, the agent last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeGuard

from sqlalchemy import select, update

from core.agent.base import Agent, AgentResult, StreamingAgent, TurnContext
from core.agent.scripted import ScriptedAgent
from core.errors import AgentError
from core.i18n import CHOSEN_KEY, LANGUAGE_KEYS, LANGUAGES, N_, STATE_KEY, follow_language, tr
from core.messages import Command, Reply, Target, parse_command, utcnow
from core.money import group_indian
from core.ports import OutboundPort, StreamingPort
from core.ratelimit import RateLimits
from core.store.database import Database
from core.store.models import ConversationStatus, Message, User, VoiceClip
from core.store.turns import Post, TurnData
from core.voice import (
    MAX_UPLOAD_BYTES,
    SUPPORTED_FORMATS,
    AudioClip,
    AudioSource,
    Transcriber,
    Transcript,
    VoiceError,
    audio_format,
)

log = logging.getLogger(__name__)

# Conversation state the pipeline keeps for itself: the LLM tokens spent today.
TOKENS_TODAY = "_llm_tokens"


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


class LiveReply:
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
        (it marks what it showed as interrupted) and collect its outcome."""
        self.end_deltas()
        if not self._final.done():
            self._final.set_exception(AgentError(f"the turn failed: {exc!r}"))
            self._final.exception()  # retrieved here: the channel may never ask for it
        if self.delivery is not None:
            await asyncio.gather(self.delivery, return_exceptions=True)


@dataclass
class Turn:
    """What the handlers see: the turn's data, read under the chat's lock, and where to answer."""

    data: TurnData
    command: Command | None
    target: Target
    port: OutboundPort | None
    # Set by the agent handler when the reply is streaming to the channel.
    live: LiveReply | None = None
    # Whether the reply may be streamed (nothing of this chat is waiting to be sent before it).
    may_stream: bool = True
    # What the bot heard in a voice note, to be said back before the reply ("You said: ...").
    heard: str | None = None

    def language(self, default: str) -> str:
        """The language of a notice answering this turn: the message's own, else the
        conversation's (nothing is recorded: the agent records it when it answers)."""
        return follow_language(dict(self.data.state), self.data.text, default)


@dataclass(frozen=True)
class Decision:
    """A handler took the turn: ``result`` is the reply, or ``None`` for a deliberate silence
    (the message is stored and marked ignored: banned, paused, relayed to a rep). ``posts`` go
    elsewhere (the sales desk), stored with the turn and sent after it."""

    result: AgentResult | None
    posts: tuple[Post, ...] = ()


class Handler(Protocol):
    async def __call__(self, turn: Turn) -> Decision | None:
        """Decide the turn, or return ``None`` to pass it to the next handler."""


class HandlerChain:
    def __init__(self, handlers: Sequence[Handler]) -> None:
        self.handlers = tuple(handlers)

    async def route(self, turn: Turn) -> Decision:
        for handler in self.handlers:
            decision = await handler(turn)
            if decision is not None:
                return decision
        return Decision(None)


# -- the handlers -------------------------------------------------------------------------------


class AdminHook(Protocol):
    """Admin commands (core.admin.AdminService)."""

    def handles(self, name: str) -> bool: ...

    async def run_command(
        self,
        channel: str,
        sender_id: str,
        command: Command,
        chat_key: str,
        group: bool = False,
        language: str = "en",
    ) -> Reply: ...


class RelayHook(Protocol):
    """The human handoff (core.handoff.HandoffService)."""

    async def relay_from_customer(self, turn: TurnData) -> tuple[Post, ...] | None: ...


class BannedSender:
    """A banned sender's messages are stored and never answered (and cost no LLM call)."""

    async def __call__(self, turn: Turn) -> Decision | None:
        return Decision(None) if turn.data.user_banned else None


class FloodGuard:
    """Per-sender flood control, on every channel: past ``per_minute`` messages a minute the
    sender's messages are stored and not answered (and cost no LLM call), with one "slow down"
    answer a minute so they know why. Counted across processes when the limits are in Redis."""

    SLOW_DOWN = N_(
        "You're sending messages faster than I can read them. Please wait a minute, then send "
        "your question again."
    )

    def __init__(self, limits: RateLimits, per_minute: int, default_language: str = "en") -> None:
        self.limits = limits
        self.per_minute = per_minute
        self.default_language = default_language

    async def __call__(self, turn: Turn) -> Decision | None:
        data = turn.data
        sender = f"{data.channel}:{data.user_external_id or data.chat_key}"
        over = False
        for _ in data.message_ids:  # every message counts, merged ones too
            over = bool(await self.limits.take("flood", sender, self.per_minute)) or over
        if not over:
            return None
        if await self.limits.take("flood-notice", sender, 1):
            return Decision(None)  # told already this minute
        text = tr(turn.language(self.default_language), self.SLOW_DOWN)
        result = AgentResult(Reply(text), data.state, meta={"flood": True})
        return Decision(result)


class AdminCommands:
    def __init__(self, admin: AdminHook, default_language: str = "en") -> None:
        self.admin = admin
        self.default_language = default_language

    async def __call__(self, turn: Turn) -> Decision | None:
        command = turn.command
        if command is None or not self.admin.handles(command.name):
            return None
        data = turn.data
        reply = await self.admin.run_command(
            data.channel,
            data.user_external_id or "",
            command,
            data.chat_key,
            bool(data.meta.get("group")),
            turn.language(self.default_language),
        )
        return Decision(AgentResult(reply, data.state, meta={"admin": command.name}))


class Paused:
    """An admin paused this conversation or the whole bot: store, answer nothing."""

    async def __call__(self, turn: Turn) -> Decision | None:
        return Decision(None) if turn.data.paused or turn.data.bot_paused else None


class HumanHandoff:
    """A rep holds the conversation: the customer's message goes to the rep, not the bot."""

    def __init__(self, handoff: RelayHook | None) -> None:
        self.handoff = handoff

    async def __call__(self, turn: Turn) -> Decision | None:
        if turn.data.conversation_status != ConversationStatus.HANDOFF:
            return None
        if self.handoff is None:
            return Decision(None)
        posts = await self.handoff.relay_from_customer(turn.data)
        return None if posts is None else Decision(None, posts)


class VoiceNotes:
    """A voice note becomes the turn's text: limits checked, the audio fetched through the
    channel, transcribed, and the transcript stored on the message before the turn goes on (a
    turn run again reads it and never transcribes twice). ``/retry`` transcribes the latest
    voice note that could not be heard. See ``core.voice``."""

    def __init__(
        self,
        db: Database,
        transcriber: Transcriber | None,
        *,
        max_seconds: float = 120,
        keep_audio: bool = False,
        deadline_seconds: float = 20.0,
        default_language: str = "en",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.transcriber = transcriber
        self.max_seconds = max_seconds
        self.keep_audio = keep_audio
        self.deadline_seconds = deadline_seconds
        self.default_language = default_language
        self.clock = clock

    async def __call__(self, turn: Turn) -> Decision | None:
        data = turn.data
        # "retry" as a word too: Slack takes a typed /retry for a slash command of its own.
        retrying = (turn.command is not None and turn.command.name == "retry") or (
            turn.command is None and data.text.strip().lower() == "retry"
        )
        if retrying:
            found = await self._untranscribed(data.conversation_id)
            if found is None:
                text = tr(
                    turn.language(self.default_language),
                    "There's no voice note waiting to be heard. Send one, or type your message.",
                )
                return Decision(AgentResult(Reply(text), data.state))
            message_id, audio = found
        else:
            stored = data.meta.get("audio")
            if not isinstance(stored, dict) or "transcript" in stored:
                return None  # not a voice note, or heard already (the text is the transcript)
            message_id, audio = data.message_id, stored
        lang = turn.language(self.default_language)
        problem = self._check(audio, turn.port, lang)
        if problem is not None:
            await self._unheard(message_id, audio, "refused")
            return self._answer(turn, problem)
        if self.transcriber is None:
            return self._answer(
                turn,
                tr(
                    lang,
                    "Sorry, I can't listen to voice notes right now. Please type your message; "
                    "your voice note is kept, and /retry will try it again later.",
                ),
            )
        try:
            clip = await self._fetch(audio, message_id, turn.port)
            transcript = await self.transcriber.transcribe(
                clip, self.clock() + self.deadline_seconds
            )
        except VoiceError as exc:
            log.warning("voice note %d not transcribed (%s): %s", message_id, exc.reason, exc)
            if exc.reason not in ("failed", "unavailable"):
                await self._unheard(message_id, audio, exc.reason)  # no retry can hear it
            return self._answer(turn, self._failure(exc.reason, lang))
        if not transcript.text:
            return self._answer(
                turn,
                tr(lang, "I couldn't hear any words in that voice note. Could you say it again?"),
            )
        await self._store(message_id, audio, transcript, clip)
        spoken = transcript.text
        text = spoken if retrying or not data.text.strip() else f"{data.text}\n{spoken}"
        meta = {**data.meta, "audio": {**audio, **transcript.as_meta()}}
        if retrying:
            turn.command = None
        turn.data = replace(data, text=text, meta=meta)
        if len(spoken.split()) <= SHORT_TRANSCRIPT_WORDS or transcript.uncertain:
            turn.heard = spoken
            turn.may_stream = False  # the reply goes out whole, what was heard before it
        return None

    def _check(self, audio: dict[str, Any], port: OutboundPort | None, lang: str) -> str | None:
        """A clear answer for a voice note that cannot be transcribed, before any download."""
        duration = audio.get("duration")
        if duration is not None and float(duration) > self.max_seconds:
            return tr(
                lang,
                "That voice note is {seconds} seconds long; I can listen to up to {limit} seconds. "
                "Please send a shorter one, or type your message.",
                seconds=round(float(duration)),
                limit=round(self.max_seconds),
            )
        limit = MAX_UPLOAD_BYTES
        if not audio.get("stored") and isinstance(port, AudioSource):
            limit = min(limit, port.max_audio_bytes)
        size = audio.get("size")
        if size is not None and int(size) > limit:
            return tr(
                lang,
                "That voice note is too large for me ({size} MB; the limit is {limit} MB). "
                "Please send a shorter one, or type your message.",
                size=f"{int(size) / 1_048_576:.1f}",
                limit=f"{limit / 1_048_576:.0f}",
            )
        kind = audio_format(audio.get("mime"), audio.get("name"))
        if kind is not None and kind not in SUPPORTED_FORMATS:
            return tr(
                lang,
                "I can't play {format} audio. Please send a voice note, or an MP3, M4A, OGG, WAV "
                "or WebM file.",
                format=kind.upper(),
            )
        if not isinstance(port, AudioSource) and not audio.get("stored"):
            return tr(lang, "I can't listen to voice notes here yet. Please type your message.")
        return None

    def _failure(self, reason: str, lang: str) -> str:
        if reason == "unreadable":
            return tr(
                lang,
                "I couldn't read that audio file. Please record the voice note again, or type "
                "your message.",
            )
        if reason in ("too_large", "unsupported"):
            return tr(lang, "I can't listen to that file. Please type your message.")
        return tr(
            lang,
            "Sorry, I couldn't listen to your voice note just now. Please try /retry in a "
            "minute, or type your message.",
        )

    @staticmethod
    def _answer(turn: Turn, text: str) -> Decision:
        return Decision(AgentResult(Reply(text), turn.data.state, meta={"voice": "unheard"}))

    async def _fetch(
        self, audio: dict[str, Any], message_id: int, port: OutboundPort | None
    ) -> AudioClip:
        async with self.db.transaction() as session:
            stored = (
                await session.scalars(select(VoiceClip).where(VoiceClip.message_id == message_id))
            ).first()
        if stored is not None:
            return AudioClip(bytes(stored.data), stored.filename, stored.mime)
        if not isinstance(port, AudioSource):
            raise VoiceError("unavailable", "this channel cannot fetch audio")
        return await port.fetch_audio(audio)

    async def _store(
        self, message_id: int, audio: dict[str, Any], transcript: Transcript, clip: AudioClip
    ) -> None:
        """The transcript becomes the message's text, its details the message's meta; the
        audio is kept only when asked to."""
        async with self.db.transaction() as session:
            message = await session.get(Message, message_id)
            if message is None:
                return
            meta = dict(message.meta or {})
            meta["audio"] = {**audio, **transcript.as_meta()}
            message.meta = meta
            message.text = (
                f"{message.text}\n{transcript.text}" if message.text.strip() else transcript.text
            )
            clips = (
                await session.scalars(select(VoiceClip).where(VoiceClip.message_id == message_id))
            ).all()
            if self.keep_audio and not clips:
                session.add(
                    VoiceClip(
                        message_id=message_id,
                        filename=clip.filename,
                        mime=clip.mime,
                        data=clip.data,
                    )
                )
            elif not self.keep_audio:
                for stored in clips:
                    await session.delete(stored)

    async def _unheard(self, message_id: int, audio: dict[str, Any], reason: str) -> None:
        """Marks a voice note no retry could hear (too long, not audio): /retry passes it by."""
        async with self.db.transaction() as session:
            message = await session.get(Message, message_id)
            if message is not None:
                message.meta = {**(message.meta or {}), "audio": {**audio, "unheard": reason}}

    async def _untranscribed(self, conversation_id: int) -> tuple[int, dict[str, Any]] | None:
        """The latest voice note of the conversation that was stored but never heard (and
        could be: not refused for its length, size or format, nor unreadable)."""
        async with self.db.transaction() as session:
            rows = await session.execute(
                select(Message.id, Message.meta)
                .where(Message.conversation_id == conversation_id, Message.direction == "in")
                .order_by(Message.id.desc())
                .limit(50)
            )
            for message_id, meta in rows:
                audio = (meta or {}).get("audio")
                if isinstance(audio, dict) and not {"transcript", "unheard"} & audio.keys():
                    return int(message_id), audio
        return None


# A transcript this short is said back ("You said: ..."): a misheard word changes everything.
SHORT_TRANSCRIPT_WORDS = 4


class BroadcastOptIn:
    """/subscribe and /unsubscribe: whether admin broadcasts reach this customer."""

    def __init__(self, db: Database, default_language: str = "en") -> None:
        self.db = db
        self.default_language = default_language

    async def __call__(self, turn: Turn) -> Decision | None:
        if turn.command is None or turn.command.name not in ("subscribe", "unsubscribe"):
            return None
        on = turn.command.name == "subscribe"
        if turn.data.user_id is not None:
            async with self.db.transaction() as session:
                await session.execute(
                    update(User).where(User.id == turn.data.user_id).values(broadcast_opt_in=on)
                )
        lang = turn.language(self.default_language)
        text = (
            tr(
                lang,
                "Done: you'll receive our occasional announcements. Send /unsubscribe to stop.",
            )
            if on
            else tr(
                lang, "Done: you won't receive announcements any more. Send /subscribe to resume."
            )
        )
        return Decision(AgentResult(Reply(text), turn.data.state))


class InputGuards:
    """Messages the agent should never see: too long, or with no text at all."""

    def __init__(self, max_text_chars: int, default_language: str = "en") -> None:
        self.max_text_chars = max_text_chars
        self.default_language = default_language

    async def __call__(self, turn: Turn) -> Decision | None:
        data = turn.data
        if len(data.text) > self.max_text_chars:
            text = tr(
                turn.language(self.default_language),
                "That message is too long for me ({length} characters; the limit is {limit}). "
                "Please send a shorter one.",
                length=group_indian(len(data.text)),
                limit=group_indian(self.max_text_chars),
            )
            return Decision(AgentResult(Reply(text), data.state))
        if turn.command is None and not data.text.strip():
            lang = turn.language(self.default_language)
            attachments = data.meta.get("attachments")
            if attachments:
                kind = ATTACHMENT_KINDS.get(attachments[0], N_("file"))
                text = tr(
                    lang,
                    "Thanks! I can only read text messages, so I can't open that {kind}. "
                    "Please type your question and I'll help.",
                    kind=tr(lang, kind),
                )
            else:
                text = tr(lang, "I didn't catch any text there. How can I help?")
            return Decision(AgentResult(Reply(text), data.state))
        return None


# What the adapters call an attachment (``Attachment.kind``), as a customer reads it.
ATTACHMENT_KINDS = {
    "photo": N_("photo"),
    "document": N_("document"),
    "voice": N_("voice note"),
    "audio": N_("audio file"),
    "video": N_("video"),
    "animation": N_("animation"),
    "sticker": N_("sticker"),
    "location": N_("location"),
    "file": N_("file"),
}


class CustomerCommands:
    """/start, /help, /reset, /human, /language, and a polite word for commands nobody knows."""

    def __init__(self, scripted: ScriptedAgent) -> None:
        self.scripted = scripted

    async def __call__(self, turn: Turn) -> Decision | None:
        if turn.command is None:
            return None
        name, state = turn.command.name, turn.data.state
        lang = self.scripted.language(state)
        # A chosen or detected language outlives /start and /reset: it is the customer's.
        kept = {k: state[k] for k in LANGUAGE_KEYS if k in state}
        if name == "start":
            return Decision(
                AgentResult(self.scripted.greeting(lang=lang), {"stage": "need", **kept})
            )
        if name == "help":
            return Decision(AgentResult(self.scripted.help(lang), state))
        if name == "reset":
            result = AgentResult(
                Reply(
                    tr(
                        lang,
                        "Done: I've cleared our conversation. Say hi whenever you're ready, or "
                        "tell me which loan you need.",
                    )
                ),
                kept,
            )
            result.meta["close"] = "reset"
            return Decision(result)
        if name == "human":
            return Decision(self.scripted.ask_consent(state, wants_human=True))
        if name == "quote":
            return Decision(self.scripted.quote_pdf(state, lang))
        if name == "language":
            return Decision(self._language(turn.command.arg_text, state, lang))
        return Decision(
            AgentResult(
                Reply(
                    tr(
                        lang,
                        "Sorry, I don't know the command /{name}. Type /help to see what I can do.",
                        name=name,
                    )
                ),
                state,
            )
        )

    def _language(self, args: str, state: dict[str, Any], lang: str) -> AgentResult:
        choice = args.strip().lower()
        if choice not in LANGUAGES:
            text = tr(
                lang,
                "Please choose a language: /language en (English), /language hi (Hindi) or "
                "/language hinglish (Hinglish).",
            )
            if choice:
                text = tr(lang, 'I don\'t speak "{choice}" yet. ', choice=args.strip()) + text
            return AgentResult(Reply(text), state)
        return AgentResult(
            Reply(tr(choice, "Done: I'll reply in English from now on.")),
            {**state, STATE_KEY: choice, CHOSEN_KEY: True},
        )


# ``isinstance`` against a runtime-checkable protocol inspects the protocol's members each time,
# and these checks run on every turn: remember the answer per class.
_CONFORMS: dict[tuple[type, type], bool] = {}


def _conforms(obj: object, protocol: type) -> bool:
    key = (type(obj), protocol)
    if key not in _CONFORMS:
        _CONFORMS[key] = isinstance(obj, protocol)
    return _CONFORMS[key]


def _streaming_port(port: OutboundPort | None) -> TypeGuard[StreamingPort]:
    return port is not None and _conforms(port, StreamingPort)


def _streaming_agent(agent: Agent) -> TypeGuard[StreamingAgent]:
    return _conforms(agent, StreamingAgent)


class AgentAnswer:
    """The agent answers (the LLM agent when configured, streaming where the channel can; the
    scripted agent otherwise, and whenever the LLM agent fails)."""

    def __init__(
        self,
        agent: Agent,
        scripted: ScriptedAgent,
        counters: Counters,
        personas: dict[str, str] | None = None,
        daily_tokens: int | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.agent = agent
        self.scripted = scripted
        self.counters = counters
        self.personas = personas if personas is not None else {"slack": "sales"}
        # LLM tokens one conversation may use a day (UTC); then the scripted agent answers.
        self.daily_tokens = daily_tokens
        self.clock = clock

    async def __call__(self, turn: Turn) -> Decision:
        data = turn.data
        ctx = TurnContext(
            conversation_id=data.conversation_id,
            channel=data.channel,
            text=data.text,
            state=data.state,
            history=data.history,
            sender_name=data.user_name,
            contact_phone=data.user_phone if data.meta.get("contact_shared") else None,
            persona=self.personas.get(data.channel, "customer"),
            summary=data.summary,
        )
        if turn.port is not None:
            with contextlib.suppress(Exception):
                await turn.port.typing(turn.target)
        today = self.clock().date().isoformat()
        spent = data.state.get(TOKENS_TODAY) or {}
        used = int(spent.get("used") or 0) if spent.get("day") == today else 0
        agent = self.agent
        if (
            agent is not self.scripted
            and self.daily_tokens is not None
            and used >= self.daily_tokens
        ):
            agent = self.scripted  # the conversation's model budget for today is spent
        try:
            result = await self._ask(agent, ctx, turn)
        except asyncio.CancelledError:
            raise
        except Exception:
            if agent is self.scripted:
                raise
            # The LLM agent already falls back internally; this is the last line of defence.
            self.counters.fallbacks += 1
            log.exception("agent failed; scripted agent answers")
            result = await self.scripted.respond(ctx)
            result.meta["fallback"] = True
        if agent is not self.agent:
            result.meta.update(fallback=True, fallback_reason="token_budget")
        if self.agent is not self.scripted:
            tokens = int(result.meta.get("prompt_tokens") or 0)
            tokens += int(result.meta.get("completion_tokens") or 0)
            result.state = {**result.state, TOKENS_TODAY: {"day": today, "used": used + tokens}}
        welcome = tr(self.scripted.language(result.state), "Welcome back! ")
        if data.meta.get("welcome_back") and not result.reply.text.startswith(welcome.strip()):
            reply = result.reply
            result.reply = Reply(
                welcome + reply.text, reply.choices, reply.citations, reply.request_contact
            )
        return Decision(result)

    async def _ask(self, agent: Agent, ctx: TurnContext, turn: Turn) -> AgentResult:
        """Stream when both the channel and the agent can; otherwise one whole reply."""
        port = turn.port
        if not (turn.may_stream and _streaming_port(port) and _streaming_agent(agent)):
            return await agent.respond(ctx)
        live = turn.live = LiveReply()
        live.delivery = asyncio.create_task(port.stream(turn.target, live), name="reply-stream")
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


def command_of(data: TurnData) -> Command | None:
    """The turn's command, parsed from its stored text (commands are never merged)."""
    return parse_command(data.text) if data.text.lstrip().startswith("/") else None


def default_handlers(
    db: Database,
    agent: Agent,
    scripted: ScriptedAgent,
    counters: Counters,
    *,
    admin: AdminHook | None = None,
    handoff: RelayHook | None = None,
    max_text_chars: int,
    personas: dict[str, str] | None = None,
    limits: RateLimits | None = None,
    flood_per_minute: int = 20,
    daily_tokens: int | None = None,
    transcriber: Transcriber | None = None,
) -> list[Handler]:
    """The chain in its rule order; ``bot.runtime`` builds it from this list."""
    language = scripted.config.default_language
    handlers: list[Handler] = [
        BannedSender(),
        FloodGuard(limits or RateLimits(), flood_per_minute, language),
    ]
    if admin is not None:
        handlers.append(AdminCommands(admin, language))
    handlers += [
        Paused(),
        VoiceNotes(db, transcriber, default_language=language),
        HumanHandoff(handoff),
        BroadcastOptIn(db, language),
        InputGuards(max_text_chars, language),
        CustomerCommands(scripted),
        AgentAnswer(agent, scripted, counters, personas, daily_tokens),
    ]
    return handlers

"""Admin commands, defined once for every channel.

Telegram admins type ``/stats`` or ``/pause 12`` (``/admin`` alone is the help); Slack admins type
``/esoteric stats``. Both arrive here as a name and arguments with the actor named
``channel:id``, checked against ``ESOTERIC_ADMINS``. Everyone else gets a polite refusal. Every
action, every refusal and every failed attempt is written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.i18n import LANGUAGES, STATE_KEY, tr
from core.jobs import close_idle_sessions
from core.messages import CUSTOMER_COMMANDS, Choice, Command, Reply, utcnow
from core.store import repository as repo
from core.store.database import Database
from core.store.models import (
    BotFlag,
    Broadcast,
    Conversation,
    ConversationStatus,
    Handoff,
    HandoffStatus,
    Lead,
    Message,
    OutboxStatus,
    User,
)

if TYPE_CHECKING:
    from core.handlers import Counters
    from core.outbox import Outbox

log = logging.getLogger(__name__)

USAGE = {
    "help": "help: this list",
    "whoami": "whoami: who you are to the bot",
    "stats": "stats: sessions, messages and leads today, open handoffs, LLM fallbacks",
    "sessions": "sessions: the open conversations, most recent first",
    "pause": "pause [all|CONVERSATION]: stop answering (the whole bot, or one conversation)",
    "resume": "resume [all|CONVERSATION]: answer again",
    "cleanup": "cleanup now: close idle sessions now",
    "kb": "kb reload: take in the bundled knowledge base again",
    "ban": "ban CHANNEL:ID: never answer this user (e.g. ban telegram:123456)",
    "unban": "unban CHANNEL:ID: answer this user again",
    "broadcast": (
        "broadcast TEXT [hi] HINDI [hinglish] HINGLISH: count the opted-in customers, then "
        "confirm to send; each gets the text in their language when given, else the English"
    ),
}
# "admin" alone is the help; "admin stats" works like "stats".
NAMES = frozenset({"admin", *USAGE})
MAX_SESSIONS_LISTED = 20
BROADCAST_LIMIT = 3500  # below Telegram's 4,096 characters once rendered

KnowledgeReload = Callable[[], Awaitable[str]]


class AdminInputError(ValueError):
    """An admin command could not be read; the message says how to write it."""


@dataclass(frozen=True)
class AdminConfig:
    admins: frozenset[str] = frozenset()
    idle_minutes: int = 30
    # Telegram allows about 30 messages a second overall; broadcasts stay well below.
    broadcast_per_second: float = 20.0
    # The language of customers whose conversations never showed one (ESOTERIC_DEFAULT_LANGUAGE).
    default_language: str = "en"


@dataclass(frozen=True)
class _Done:
    reply: Reply
    target: str | None = None
    details: dict[str, object] | None = None


def _prefix(channel: str) -> str:
    return "/esoteric " if channel == "slack" else "/"


class AdminService:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        counters: Counters,
        config: AdminConfig,
        *,
        reload_knowledge: KnowledgeReload | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.counters = counters
        self.config = config
        self.reload_knowledge = reload_knowledge
        self.clock = clock
        self.sleep = sleep
        self._tasks: set[asyncio.Task[None]] = set()

    # -- entry points ----------------------------------------------------------------------------

    def handles(self, name: str) -> bool:
        """Chat commands this service answers: /help stays the customers' (/admin is ours)."""
        return name in NAMES and name not in CUSTOMER_COMMANDS

    def is_admin(self, actor: str) -> bool:
        return actor in self.config.admins

    async def run_command(
        self,
        channel: str,
        sender_id: str,
        command: Command,
        chat_key: str,
        group: bool = False,
        language: str = "en",
    ) -> Reply:
        """A command typed in a chat (Telegram ``/stats``). In a group chat every member would
        see the answer (and an admin's command would act in front of them), so admin commands
        work in a private chat only; in a group they are refused, for admins too, and audited.
        Refusals are in the chat's ``language`` (a customer may have typed the command)."""
        actor = f"{channel}:{sender_id}"
        if group:
            name = command.name
            if name == "admin":
                name = command.args[0].lower() if command.args else "help"
            async with self.db.transaction() as session:
                repo.audit(session, actor, name, "refused", None, {"where": "group"}, self.clock())
            return Reply(
                tr(
                    language,
                    "Admin commands work only in a private chat with me, so that nobody else "
                    "sees them. If you need help with a loan, just ask.",
                )
            )
        return await self.run(actor, command.name, list(command.args), language)

    async def run_text(self, actor: str, text: str) -> Reply:
        """A command as words (Slack ``/esoteric pause 12`` arrives as ``pause 12``)."""
        words = text.split()
        return await self.run(actor, words[0].lower() if words else "help", words[1:])

    async def run(self, actor: str, name: str, args: list[str], language: str = "en") -> Reply:
        if name == "admin":
            name, args = (args[0].lower(), args[1:]) if args else ("help", [])
        now = self.clock()
        if name not in USAGE:
            async with self.db.transaction() as session:
                repo.audit(session, actor, "admin_unknown", "failed", None, {"name": name}, now)
            return Reply(f"I don't know the admin command {name!r}.\n\n" + self._help(actor).text)
        if not self.is_admin(actor):
            async with self.db.transaction() as session:
                repo.audit(session, actor, name, "refused", None, {"args": args}, now)
            return self._refusal(actor, name, language)
        try:
            done = await self._dispatch(actor, name, args)
        except AdminInputError as exc:
            async with self.db.transaction() as session:
                repo.audit(
                    session, actor, name, "failed", None, {"args": args, "error": str(exc)}, now
                )
            return Reply(str(exc))
        async with self.db.transaction() as session:
            repo.audit(session, actor, name, "ok", done.target, done.details or {}, now)
        return done.reply

    def _refusal(self, actor: str, name: str, language: str) -> Reply:
        if name == "whoami":
            return Reply(
                tr(
                    language,
                    "You are {actor}. That account is not an Esoteric admin, so admin commands "
                    "are not available to you.",
                    actor=actor,
                )
            )
        return Reply(
            tr(
                language,
                "Sorry, that command is only for Esoteric admins. If you need help with a "
                "loan, just ask me.",
            )
        )

    async def _dispatch(self, actor: str, name: str, args: list[str]) -> _Done:
        if name == "help":
            return _Done(self._help(actor))
        if name == "whoami":
            return _Done(Reply(f"You are {actor}, an Esoteric admin."))
        if name == "stats":
            return _Done(await self._stats())
        if name == "sessions":
            return _Done(await self._sessions())
        if name in ("pause", "resume"):
            return await self._pause(actor, args, name == "pause")
        if name == "cleanup":
            if args and [a.lower() for a in args] != ["now"]:
                raise AdminInputError("Usage: " + USAGE["cleanup"])
            closed = await close_idle_sessions(self.db, self.config.idle_minutes, self.clock)
            plural = "" if closed == 1 else "s"
            return _Done(
                Reply(f"Cleanup done: closed {closed} idle session{plural}."),
                details={"closed": closed},
            )
        if name == "kb":
            if [a.lower() for a in args] != ["reload"]:
                raise AdminInputError("Usage: " + USAGE["kb"])
            if self.reload_knowledge is None:
                raise AdminInputError(
                    "No knowledge base is open, so there is nothing to reload. Check "
                    "ESOTERIC_EMBEDDING_MODEL_DIR and ESOTERIC_CHROMA_URL, then restart."
                )
            summary = await self.reload_knowledge()
            return _Done(Reply(summary), details={"summary": summary})
        if name in ("ban", "unban"):
            return await self._ban(actor, args, name == "ban")
        assert name == "broadcast"
        return await self._broadcast(actor, args)

    def _help(self, actor: str) -> Reply:
        prefix = _prefix(actor.partition(":")[0])
        lines = ["**Admin commands**"]
        lines += [f"- {prefix}{usage}" for usage in USAGE.values()]
        if prefix == "/":
            lines.append("(/admin alone shows this list.)")
        return Reply("\n".join(lines))

    # -- figures --------------------------------------------------------------------------------

    async def _stats(self) -> Reply:
        now = self.clock()
        midnight = datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)
        async with self.db.transaction() as session:

            async def count(query: Select[tuple[int]]) -> int:
                return int(await session.scalar(query) or 0)

            active = await count(
                select(func.count())
                .select_from(Conversation)
                .where(Conversation.status != ConversationStatus.CLOSED)
            )
            inbound = await count(
                select(func.count())
                .select_from(Message)
                .where(Message.created_at >= midnight, Message.direction == "in")
            )
            outbound = await count(
                select(func.count())
                .select_from(Message)
                .where(Message.created_at >= midnight, Message.direction == "out")
            )
            leads = await count(
                select(func.count()).select_from(Lead).where(Lead.created_at >= midnight)
            )
            handoffs = dict(
                (
                    await session.execute(
                        select(Handoff.status, func.count())
                        .where(Handoff.status.in_(HandoffStatus.OPEN))
                        .group_by(Handoff.status)
                    )
                )
                .tuples()
                .all()
            )
            # Grouped by its label: Postgres sees two bound copies of the JSON path as
            # different expressions.
            reason = Message.meta["fallback_reason"].as_string().label("reason")
            reasons = (
                await session.execute(
                    select(reason, func.count())
                    .where(
                        Message.created_at >= midnight,
                        Message.direction == "out",
                        Message.meta["fallback"].as_boolean().is_(True),
                    )
                    .group_by(reason)
                )
            ).all()
            paused = await session.get(BotFlag, "paused")
        fallbacks = sum(int(n) for _, n in reasons)
        # "no_key" is the offline agent by choice, not an LLM error.
        errors = sum(int(n) for reason, n in reasons if reason not in (None, "no_key"))
        counters = self.counters
        waiting = handoffs.get(HandoffStatus.WAITING, 0)
        claimed = handoffs.get(HandoffStatus.CLAIMED, 0)
        lines = [
            f"**Esoteric today** (since {midnight:%Y-%m-%d} 00:00 UTC)"
            + (" — the bot is PAUSED" if paused is not None else ""),
            f"- Active sessions: {active}",
            f"- Messages today: {inbound} in, {outbound} out",
            f"- Leads today: {leads}",
            f"- Handoffs open: {waiting + claimed} ({waiting} waiting, {claimed} claimed)",
            f"- LLM errors today: {errors}; fallbacks to the scripted agent: {fallbacks}",
            f"- This process: {counters.turns} turns, {counters.errors} failed turns, "
            f"{counters.dedup_hits} duplicate deliveries ignored",
        ]
        return Reply("\n".join(lines))

    async def _sessions(self) -> Reply:
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(
                        Conversation.id,
                        Conversation.channel,
                        Conversation.chat_key,
                        Conversation.status,
                        Conversation.paused,
                        Conversation.last_activity_at,
                        Conversation.assigned_to,
                        User.display_name,
                    )
                    .outerjoin(User, User.id == Conversation.user_id)
                    .where(Conversation.status != ConversationStatus.CLOSED)
                    .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
                    .limit(MAX_SESSIONS_LISTED + 1)
                )
            ).all()
        if not rows:
            return Reply("No open sessions.")
        lines = [f"**Open sessions** (most recent first, up to {MAX_SESSIONS_LISTED})"]
        for row in rows[:MAX_SESSIONS_LISTED]:
            flags = [row.status]
            if row.paused:
                flags.append("paused")
            if row.assigned_to:
                flags.append(f"with {row.assigned_to}")
            lines.append(
                f"- #{row.id} {row.channel}:{row.chat_key} {row.display_name or '-'} "
                f"({', '.join(flags)}; last active {row.last_activity_at:%H:%M} UTC)"
            )
        if len(rows) > MAX_SESSIONS_LISTED:
            lines.append("…and more.")
        return Reply("\n".join(lines))

    # -- pause and resume --------------------------------------------------------------------------

    async def _pause(self, actor: str, args: list[str], pause: bool) -> _Done:
        usage = "Usage: " + USAGE["pause" if pause else "resume"]
        if len(args) > 1:
            raise AdminInputError(usage)
        what = args[0].lower().lstrip("#") if args else "all"
        now = self.clock()
        if what in ("all", "bot"):
            async with self.db.transaction() as session:
                if pause:
                    try:
                        async with session.begin_nested():
                            await session.execute(
                                insert(BotFlag).values(
                                    key="paused", value={}, updated_at=now, updated_by=actor
                                )
                            )
                    except IntegrityError:
                        pass  # already paused
                else:
                    await session.execute(delete(BotFlag).where(BotFlag.key == "paused"))
            prefix = _prefix(actor.partition(":")[0])
            text = (
                f"Paused: the bot stores every message and answers none until {prefix}resume."
                if pause
                else "Resumed: the bot answers again."
            )
            return _Done(Reply(text), target="bot")
        if not what.isdigit():
            raise AdminInputError(usage + " (CONVERSATION is a number from sessions)")
        conversation_id = int(what)
        async with self.db.transaction() as session:
            done = await session.execute(
                update(Conversation)
                .where(
                    Conversation.id == conversation_id,
                    Conversation.status != ConversationStatus.CLOSED,
                )
                .values(paused=pause)
                .execution_options(synchronize_session=False)
            )
        if not getattr(done, "rowcount", 0):
            raise AdminInputError(f"There is no open conversation #{conversation_id}.")
        text = (
            f"Paused conversation #{conversation_id}: its messages are stored, not answered."
            if pause
            else f"Resumed conversation #{conversation_id}."
        )
        return _Done(Reply(text), target=f"conversation:{conversation_id}")

    # -- bans -------------------------------------------------------------------------------------

    async def _ban(self, actor: str, args: list[str], ban: bool) -> _Done:
        usage = "Usage: " + USAGE["ban" if ban else "unban"]
        if len(args) != 1:
            raise AdminInputError(usage)
        channel, _, external_id = args[0].partition(":")
        channel = channel.lower()
        if not channel or not external_id:
            raise AdminInputError(usage)
        who = f"{channel}:{external_id}"
        if ban and who in self.config.admins:
            raise AdminInputError(
                f"{who} is an admin; remove it from ESOTERIC_ADMINS before banning it."
            )
        now = self.clock()
        async with self.db.transaction() as session:
            user = (
                await session.scalars(
                    select(User).where(User.channel == channel, User.external_id == external_id)
                )
            ).one_or_none()
            if user is None:
                if not ban:
                    raise AdminInputError(f"I have never seen {who}, so there is nothing to undo.")
                # A ban may come before the first message: the user row carries it.
                session.add(
                    User(
                        channel=channel,
                        external_id=external_id,
                        banned=True,
                        created_at=now,
                        last_seen_at=now,
                    )
                )
            else:
                user.banned = ban
        text = (
            f"Banned {who}: their messages are stored and never answered."
            if ban
            else f"Unbanned {who}: the bot answers them again."
        )
        return _Done(Reply(text), target=f"user:{who}")

    # -- broadcast ---------------------------------------------------------------------------------

    def _recipients_query(self) -> Select[tuple[int, str, str, dict[str, Any] | None]]:
        """Opted-in customers, each with the state of their latest conversation (where their
        language is kept)."""
        latest = (
            select(Conversation.user_id, func.max(Conversation.id).label("conversation_id"))
            .group_by(Conversation.user_id)
            .subquery()
        )
        return (
            select(User.id, User.channel, User.external_id, Conversation.state)
            .outerjoin(latest, latest.c.user_id == User.id)
            .outerjoin(Conversation, Conversation.id == latest.c.conversation_id)
            .where(
                User.broadcast_opt_in.is_(True),
                User.banned.is_(False),
                User.channel.in_(list(self.outbox.ports)),
            )
            .order_by(User.id)
        )

    def _language(self, state: dict[str, Any] | None) -> str:
        language = (state or {}).get(STATE_KEY)
        return language if language in LANGUAGES else self.config.default_language

    async def _broadcast(self, actor: str, args: list[str]) -> _Done:
        prefix = _prefix(actor.partition(":")[0])
        if len(args) == 2 and args[0].lower() == "send" and args[1].lstrip("#").isdigit():
            return await self._send_broadcast(actor, int(args[1].lstrip("#")))
        text = " ".join(args).strip()
        if not text:
            raise AdminInputError("Usage: " + USAGE["broadcast"])
        if len(text) > BROADCAST_LIMIT:
            raise AdminInputError(
                f"That broadcast is {len(text):,} characters; keep it under {BROADCAST_LIMIT:,}."
            )
        variants = broadcast_variants(text)
        now = self.clock()
        async with self.db.transaction() as session:
            recipients = (await session.execute(self._recipients_query())).all()
            count = len(recipients)
            broadcast_id = (
                await session.execute(
                    insert(Broadcast)
                    .values(
                        text=text,
                        created_by=actor,
                        created_at=now,
                        status="draft",
                        recipients=count,
                        sent=0,
                        failed=0,
                    )
                    .returning(Broadcast.id)
                )
            ).scalar_one()
        plural = "" if count == 1 else "s"
        seconds = count / self.config.broadcast_per_second
        by_language = Counter(self._language(row.state) for row in recipients)
        shown = "\n\n".join(
            f"{LANGUAGE_LABELS[lang]} ({by_language.get(lang, 0)}): {variant}"
            for lang, variant in variants.items()
        )
        untranslated = [
            f"{n} in {LANGUAGE_LABELS[lang]}"
            for lang, n in sorted(by_language.items())
            if lang not in variants
        ]
        if untranslated:
            shown += "\n\nNo text given for " + ", ".join(untranslated) + ": they get the English."
        reply = Reply(
            f"**Dry run: broadcast #{broadcast_id}** would reach {count} customer{plural} who "
            f"opted in (about {seconds:.0f} s at {self.config.broadcast_per_second:g} "
            f"messages a second). Nothing was sent.\n\n{shown}\n\n"
            f"To send it: {prefix}broadcast send {broadcast_id}",
            choices=(Choice(f"Send to {count}", f"{prefix}broadcast send {broadcast_id}"),)
            if count
            else (),
        )
        return _Done(
            reply, target=f"broadcast:{broadcast_id}", details={"dry_run": True, "count": count}
        )

    async def _send_broadcast(self, actor: str, broadcast_id: int) -> _Done:
        async with self.db.transaction() as session:
            # Sent once: only the UPDATE that finds it still a draft goes on.
            started = await session.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id, Broadcast.status == "draft")
                .values(status="sending")
                .execution_options(synchronize_session=False)
            )
            if not getattr(started, "rowcount", 0):
                found = await session.get(Broadcast, broadcast_id)
                if found is None:
                    raise AdminInputError(f"There is no broadcast #{broadcast_id}.")
                raise AdminInputError(
                    f"Broadcast #{broadcast_id} was already sent ({found.status})."
                )
            text = (await session.get(Broadcast, broadcast_id)).text  # type: ignore[union-attr]
            variants = broadcast_variants(text)
            recipients = [
                (row.channel, row.external_id, variants.get(self._language(row.state)))
                for row in (await session.execute(self._recipients_query())).all()
            ]
            await session.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id)
                .values(recipients=len(recipients))
            )
        # Each delivery is an outbox item first: a restart mid-broadcast sends the rest, once.
        items = await self.outbox.store.add_broadcast_items(
            broadcast_id,
            [
                (channel, external_id, Reply(variant or variants["en"]).payload())
                for channel, external_id, variant in recipients
            ],
            self.clock(),
        )
        task = asyncio.create_task(
            self._deliver_broadcast(actor, broadcast_id, items),
            name=f"broadcast:{broadcast_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        plural = "" if len(recipients) == 1 else "s"
        return _Done(
            Reply(
                f"Sending broadcast #{broadcast_id} to {len(recipients)} customer{plural}, "
                f"{self.config.broadcast_per_second:g} a second at most."
            ),
            target=f"broadcast:{broadcast_id}",
            details={"count": len(recipients)},
        )

    async def _deliver_broadcast(self, actor: str, broadcast_id: int, items: list[int]) -> None:
        interval = 1.0 / self.config.broadcast_per_second
        sent = failed = 0
        try:
            for index, item_id in enumerate(items):
                if index:
                    await self.sleep(interval)
                outcome = await self.outbox.send_loose(item_id)
                if outcome == OutboxStatus.SENT:
                    sent += 1
                elif outcome is not None:
                    failed += 1
                    log.warning("broadcast %d: outbox item %d %s", broadcast_id, item_id, outcome)
        finally:
            # Recorded even when shutdown cuts the broadcast short: the counts say how far it got.
            status = "sent" if sent + failed == len(items) else "interrupted"
            now = self.clock()
            async with self.db.transaction() as session:
                await session.execute(
                    update(Broadcast)
                    .where(Broadcast.id == broadcast_id)
                    .values(status=status, sent=sent, failed=failed, finished_at=now)
                )
                repo.audit(
                    session,
                    actor,
                    "broadcast_done",
                    "ok" if status == "sent" else "failed",
                    f"broadcast:{broadcast_id}",
                    {"sent": sent, "failed": failed, "status": status},
                    now,
                )

    async def idle(self) -> None:
        """Wait for broadcasts in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await self.idle()


def summary_of_ingest(added: int, unchanged: int, removed: int) -> str:
    return (
        f"Knowledge base reloaded: {added} chunks added, {unchanged} unchanged, {removed} removed."
    )


LANGUAGE_LABELS = {"en": "English", "hi": "Hindi", "hinglish": "Hinglish"}
_VARIANT = re.compile(r"\[(en|hi|hinglish)\]", re.IGNORECASE)


def broadcast_variants(text: str) -> dict[str, str]:
    """``New rates! [hi] नई दरें! [hinglish] Nayi rates!`` -> the text per language. The text
    before any marker is the English, which every customer without their own text gets, so it
    is required."""
    parts = _VARIANT.split(text)
    variants: dict[str, str] = {}
    if parts[0].strip():
        variants["en"] = parts[0].strip()
    for marker, body in zip(parts[1::2], parts[2::2], strict=True):
        lang = marker.lower()
        if lang in variants:
            raise AdminInputError(f"The broadcast gives [{lang}] twice.")
        if not body.strip():
            raise AdminInputError(f"The [{lang}] text of the broadcast is empty.")
        variants[lang] = body.strip()
    if "en" not in variants:
        raise AdminInputError(
            "A broadcast needs its English text first (or after [en]): customers without a "
            "text in their language get it."
        )
    return variants

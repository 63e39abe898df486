"""Human handoff: from a customer's conversation to a sales rep in the sales desk, and back.

A handoff opens when a customer asks for a person or leaves a lead with consent. A lead card goes
to the sales desk; the first rep to claim it gets the conversation (one conditional UPDATE decides,
so two clicks at once make one winner). While it is claimed the bot is silent: the customer's
messages go to the card's thread and the rep's thread replies go to the customer, each persisted
like any other message with the rep as author (``human:<rep id>``). Releasing it, or leaving it
idle past the limit, gives the conversation back to the bot with the human exchange in its
history. Every timer (the unclaimed reminder, the idle limit) is a column compared with the clock
by ``tick``, so a restart loses none of them.

The core knows the desk only through ``SalesDeskPort``; customers are reached through their
channel's ``OutboundPort`` (``ConversationService.ports``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from babel.dates import format_datetime
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.catalogue import Catalogue
from core.engine import TurnJob
from core.hours import BusinessHours
from core.i18n import DATE_LOCALES, LANGUAGES, STATE_KEY, tr
from core.messages import utcnow
from core.money import format_money
from core.outbox import Outbox
from core.store import repository as repo
from core.store.database import Database
from core.store.models import (
    Conversation,
    ConversationStatus,
    Handoff,
    HandoffStatus,
    Lead,
    Message,
    User,
)
from core.store.turns import ChatAddress, Outbound, Post

if TYPE_CHECKING:
    from core.store.turns import TurnData

log = logging.getLogger(__name__)

DESK = "slack"  # the channel reps work in; their ids are audited as "slack:<id>"


# -- what the desk shows -------------------------------------------------------------------------


@dataclass(frozen=True)
class CardRef:
    """Where a lead card is: its channel and the message ts (the thread replies hang from)."""

    channel: str
    ts: str


@dataclass(frozen=True)
class LeadCard:
    handoff_id: int
    status: str
    reason: str  # "human": the customer asked for a person; "lead": a qualified lead
    customer: str
    customer_channel: str
    product: str | None = None
    amount: str | None = None
    tenure: str | None = None
    emi: str | None = None
    eligibility: str | None = None
    phone: str | None = None
    lead_id: int | None = None
    recent: tuple[tuple[str, str], ...] = ()  # (who, text), oldest first
    assigned_to: str | None = None
    assigned_name: str | None = None
    note: str | None = None


class SalesDeskPort(Protocol):
    """Implemented by the channel the sales team works in."""

    async def post_card(self, card: LeadCard) -> CardRef:
        """Post a new lead card with a Claim button."""

    async def update_card(self, ref: CardRef, card: LeadCard) -> None:
        """Redraw a card (claimed by whom, released, returned)."""

    async def post_in_thread(self, ref: CardRef, text: str, *, broadcast: bool = False) -> None:
        """Say something in the card's thread; ``broadcast`` also shows it in the channel."""


@dataclass(frozen=True)
class HandoffConfig:
    sla_minutes: int = 10
    idle_minutes: int = 30
    hours: BusinessHours | None = None  # None: reps are always there
    recent_messages: int = 6
    currency: str = "INR"
    # The customer's language when their conversation has none yet (ESOTERIC_DEFAULT_LANGUAGE).
    default_language: str = "en"


@dataclass(frozen=True)
class ClaimResult:
    won: bool
    handoff_id: int
    holder_id: str | None = None
    holder_name: str | None = None
    problem: str | None = None  # why nobody could claim it (unknown, already ended)


@dataclass(frozen=True)
class ReleaseResult:
    released: bool
    message: str
    handoff_id: int | None = None


class RelayOutcome:
    RELAYED = "relayed"
    NOT_A_CARD = "not_a_card"  # the thread is no lead card: ordinary thread talk
    NOT_CLAIMED = "not_claimed"
    OTHER_REP = "other_rep"
    ENDED = "ended"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class RelayResult:
    outcome: str
    holder_name: str | None = None

    @property
    def notice(self) -> str | None:
        """What to tell the rep when their message did not go to the customer."""
        if self.outcome == RelayOutcome.NOT_CLAIMED:
            return "Claim this lead first: your message was not sent to the customer."
        if self.outcome == RelayOutcome.OTHER_REP:
            return (
                f"{self.holder_name or 'Another rep'} has this conversation: your message was "
                "not sent to the customer."
            )
        if self.outcome == RelayOutcome.ENDED:
            return "This handoff has ended: your message was not sent to the customer."
        return None


@dataclass
class TickReport:
    cards_posted: int = 0
    reminded: int = 0
    returned: int = 0
    errors: list[str] = field(default_factory=list)


_ELIGIBILITY = {True: "eligible on first check", False: "not eligible on first check"}


def _as_decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


class HandoffService:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        catalogue: Catalogue | None = None,
        config: HandoffConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.catalogue = catalogue
        self.config = config or HandoffConfig()
        self.clock = clock
        self.desk: SalesDeskPort | None = None

    def attach_desk(self, desk: SalesDeskPort) -> None:
        self.desk = desk

    # -- opening -------------------------------------------------------------------------------

    async def request(self, conversation_id: int, reason: str) -> int | None:
        """Open a handoff for a conversation (or refresh the open one's card with a newly
        captured lead). Returns the handoff id, ``None`` without a sales desk."""
        if self.desk is None:
            log.info(
                "no sales desk configured; handoff for conversation %d not opened", conversation_id
            )
            return None
        now = self.clock()
        lead_id = await self._latest_lead(conversation_id)
        async with self.db.transaction() as session:
            existing = await self._open_for(session, conversation_id)
            if existing is not None:
                changed = lead_id is not None and existing.lead_id != lead_id
                if changed:
                    existing.lead_id = lead_id
                handoff_id, has_card = existing.id, existing.card_ts is not None
                fresh = False
            else:
                fresh = True
                handoff_id, has_card, changed = 0, False, False
        if fresh:
            # Stored in UTC: SQLite keeps no offset, so a local time would read back wrong.
            opens = (self.config.hours.next_open(now) if self.config.hours else now).astimezone(UTC)
            try:
                async with self.db.transaction() as session:
                    handoff_id = (
                        await session.execute(
                            insert(Handoff)
                            .values(
                                conversation_id=conversation_id,
                                lead_id=lead_id,
                                reason=reason,
                                status=HandoffStatus.WAITING,
                                requested_at=now,
                                sla_due_at=opens + timedelta(minutes=self.config.sla_minutes),
                                last_activity_at=now,
                            )
                            .returning(Handoff.id)
                        )
                    ).scalar_one()
                    repo.audit(
                        session,
                        f"conversation:{conversation_id}",
                        "handoff_open",
                        "ok",
                        target=f"handoff:{handoff_id}",
                        details={"reason": reason, "lead_id": lead_id},
                        now=now,
                    )
            except IntegrityError:
                # Another turn or process opened it first: that one is the handoff.
                return await self.request(conversation_id, reason)
            if opens > now:
                await self._tell_customer(
                    conversation_id,
                    "after_hours",
                    lambda lang: tr(
                        lang,
                        "Our advisors are available {hours}. Someone will reply from {opens}. "
                        "Meanwhile I'm here for any questions.",
                        **self._opening(opens, lang),
                    ),
                )
        if not has_card:
            await self._post_card(handoff_id)
        elif changed:
            await self._redraw(handoff_id)
        return handoff_id

    def _local(self, at: datetime) -> datetime:
        return at.astimezone(self.config.hours.tz) if self.config.hours else at

    def _opening(self, opens: datetime, lang: str) -> dict[str, str]:
        """The desk's hours and its next opening, with day and month names in ``lang``."""
        hours, local = self.config.hours, self._local(opens)
        if lang == "en":
            return {
                "hours": hours.describe() if hours else "",
                "opens": f"{local:%A %d %B, %H:%M}",
            }
        locale = DATE_LOCALES[lang]
        return {
            "hours": hours.describe(locale) if hours else "",
            "opens": format_datetime(local, "EEEE d MMMM, HH:mm", locale=locale),
        }

    async def _latest_lead(self, conversation_id: int) -> int | None:
        async with self.db.transaction() as session:
            return await session.scalar(
                select(Lead.id)
                .where(Lead.conversation_id == conversation_id, Lead.consent.is_(True))
                .order_by(Lead.id.desc())
                .limit(1)
            )

    @staticmethod
    async def _open_for(session: AsyncSession, conversation_id: int) -> Handoff | None:
        return (
            await session.scalars(
                select(Handoff).where(
                    Handoff.conversation_id == conversation_id,
                    Handoff.status.in_(HandoffStatus.OPEN),
                )
            )
        ).one_or_none()

    async def _post_card(self, handoff_id: int) -> None:
        """Post the card once: a lost race (two processes ticking) costs a redraw, not a
        second card, because card_ts is only written where it is still empty."""
        assert self.desk is not None
        card = await self.card(handoff_id)
        if card is None:
            return
        ref = await self.desk.post_card(card)
        async with self.db.transaction() as session:
            await session.execute(
                update(Handoff)
                .where(Handoff.id == handoff_id, Handoff.card_ts.is_(None))
                .values(card_channel=ref.channel, card_ts=ref.ts)
            )

    async def card(self, handoff_id: int, note: str | None = None) -> LeadCard | None:
        """The card's data, read fresh from SQL."""
        async with self.db.transaction() as session:
            handoff = await session.get(Handoff, handoff_id)
            if handoff is None:
                return None
            conversation = await session.get(Conversation, handoff.conversation_id)
            assert conversation is not None
            user = await session.get(User, conversation.user_id) if conversation.user_id else None
            lead = await session.get(Lead, handoff.lead_id) if handoff.lead_id else None
            rows = (
                await session.execute(
                    select(Message.direction, Message.author, Message.text)
                    .where(Message.conversation_id == conversation.id)
                    .order_by(Message.id.desc())
                    .limit(self.config.recent_messages)
                )
            ).all()
        customer = (lead.name if lead and lead.name else None) or (
            user.display_name if user and user.display_name else None
        )
        customer = customer or f"{conversation.channel} user {conversation.chat_key}"
        recent = tuple(
            (
                customer if d == "in" else "Advisor" if a.startswith("human:") else "Esoteric",
                t,
            )
            for d, a, t in reversed(rows)
        )
        state = conversation.state or {}
        product_id = lead.product if lead else state.get("product")
        amount = lead.amount if lead else _as_decimal(state.get("amount"))
        tenure = lead.tenure_months if lead else state.get("tenure")
        emi = lead.emi if lead else _as_decimal(state.get("emi"))
        eligible = lead.eligible if lead else state.get("eligible")
        product = self.catalogue.products.get(product_id) if self.catalogue and product_id else None
        money = self.config.currency
        return LeadCard(
            handoff_id=handoff.id,
            status=handoff.status,
            reason=handoff.reason,
            customer=customer,
            customer_channel=conversation.channel,
            product=product.name if product else product_id,
            amount=format_money(amount, money) if amount is not None else None,
            tenure=f"{int(tenure)} months" if tenure else None,
            emi=format_money(emi, money, paise=True) if emi is not None else None,
            eligibility=_ELIGIBILITY.get(eligible) if isinstance(eligible, bool) else None,
            phone=(lead.phone if lead else None) or (user.phone if user else None),
            lead_id=lead.id if lead else None,
            recent=recent,
            assigned_to=handoff.assigned_to,
            assigned_name=handoff.assigned_name,
            note=note,
        )

    async def _redraw(self, handoff_id: int, note: str | None = None) -> CardRef | None:
        if self.desk is None:
            return None
        card = await self.card(handoff_id, note)
        ref = await self._ref(handoff_id)
        if card is None or ref is None:
            return None
        await self.desk.update_card(ref, card)
        return ref

    async def _ref(self, handoff_id: int) -> CardRef | None:
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(Handoff.card_channel, Handoff.card_ts).where(Handoff.id == handoff_id)
                )
            ).first()
        if row is None or not row.card_channel or not row.card_ts:
            return None
        return CardRef(row.card_channel, row.card_ts)

    # -- claim and release -----------------------------------------------------------------------

    async def claim(self, handoff_id: int, rep_id: str, rep_name: str | None) -> ClaimResult:
        """The first rep wins: one UPDATE that only matches an unclaimed handoff."""
        now = self.clock()
        name = rep_name or rep_id
        actor = f"{DESK}:{rep_id}"
        async with self.db.transaction() as session:
            claimed = await session.execute(
                update(Handoff)
                .where(Handoff.id == handoff_id, Handoff.status == HandoffStatus.WAITING)
                .values(
                    status=HandoffStatus.CLAIMED,
                    assigned_to=rep_id,
                    assigned_name=name,
                    claimed_at=now,
                    last_activity_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            won = bool(getattr(claimed, "rowcount", 0))
            row = (
                await session.execute(
                    select(
                        Handoff.conversation_id,
                        Handoff.status,
                        Handoff.assigned_to,
                        Handoff.assigned_name,
                    ).where(Handoff.id == handoff_id)
                )
            ).first()
            if won:
                assert row is not None
                conversation_id = await self._live_conversation(session, handoff_id, now)
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == conversation_id)
                    .values(
                        status=ConversationStatus.HANDOFF,
                        assigned_to=rep_id,
                        last_activity_at=now,
                        closed_at=None,
                        close_reason=None,
                    )
                )
                repo.audit(session, actor, "handoff_claim", "ok", f"handoff:{handoff_id}", now=now)
            else:
                holder = row.assigned_name if row else None
                repo.audit(
                    session,
                    actor,
                    "handoff_claim",
                    "refused",
                    f"handoff:{handoff_id}",
                    details={
                        "holder": row.assigned_to if row else None,
                        "status": row.status if row else "unknown",
                    },
                    now=now,
                )
        if row is None:
            return ClaimResult(False, handoff_id, problem=f"There is no handoff #{handoff_id}.")
        if not won:
            if row.status == HandoffStatus.CLAIMED:
                return ClaimResult(False, handoff_id, row.assigned_to, holder)
            return ClaimResult(
                False, handoff_id, problem=f"Handoff #{handoff_id} has ended ({row.status})."
            )
        await self._quietly(self._redraw(handoff_id))
        await self._quietly(self._thread(handoff_id, f"{name} claimed this conversation."))
        await self._tell_customer(
            conversation_id,
            "claimed",
            lambda lang: tr(
                lang,
                "{name}, one of our loan advisors, has joined and will reply here shortly.",
                name=name,
            ),
        )
        return ClaimResult(True, handoff_id, rep_id, name)

    @staticmethod
    async def _live_conversation(session: AsyncSession, handoff_id: int, now: datetime) -> int:
        """The conversation a claimed handoff talks in. A waiting handoff's conversation may
        have been closed meanwhile (idle, /reset): the customer's open conversation on the same
        chat takes it over, or the closed one is reopened when there is none."""
        handoff = await session.get(Handoff, handoff_id)
        assert handoff is not None
        conversation = await session.get(Conversation, handoff.conversation_id)
        assert conversation is not None
        if conversation.status != ConversationStatus.CLOSED:
            return conversation.id
        current = await repo.open_conversation(
            session, conversation.channel, conversation.chat_key, conversation.thread
        )
        if current is not None:
            handoff.conversation_id = current.id
            await session.flush()
            return current.id
        return conversation.id

    async def release(
        self, rep_id: str, handoff_id: int | None = None, *, actor: str | None = None
    ) -> ReleaseResult:
        """The assigned rep hands the conversation back to the bot. Without an id: the one
        conversation the rep has."""
        actor = actor or f"{DESK}:{rep_id}"
        now = self.clock()
        async with self.db.transaction() as session:
            if handoff_id is None:
                mine = list(
                    (
                        await session.scalars(
                            select(Handoff.id).where(
                                Handoff.status == HandoffStatus.CLAIMED,
                                Handoff.assigned_to == rep_id,
                            )
                        )
                    ).all()
                )
                if len(mine) != 1:
                    repo.audit(
                        session,
                        actor,
                        "handoff_release",
                        "refused",
                        None,
                        details={"claimed": mine},
                        now=now,
                    )
                    if not mine:
                        return ReleaseResult(False, "You have no conversation to release.")
                    listed = ", ".join(f"#{i}" for i in mine)
                    return ReleaseResult(
                        False,
                        f"You have {len(mine)} conversations ({listed}); say which one, "
                        "e.g. /esoteric release " + str(mine[0]) + ".",
                    )
                handoff_id = mine[0]
            ended = await self._end(
                session, handoff_id, HandoffStatus.RELEASED, actor, now, rep_id=rep_id
            )
            if ended is None:
                handoff = await session.get(Handoff, handoff_id)
                repo.audit(
                    session,
                    actor,
                    "handoff_release",
                    "refused",
                    f"handoff:{handoff_id}",
                    details={"status": handoff.status if handoff else "unknown"},
                    now=now,
                )
                if handoff is None:
                    return ReleaseResult(False, f"There is no handoff #{handoff_id}.")
                if handoff.status == HandoffStatus.CLAIMED:
                    return ReleaseResult(
                        False, f"{handoff.assigned_name} has this conversation, not you."
                    )
                return ReleaseResult(False, f"Handoff #{handoff_id} is not claimed.")
        name = ended
        await self._after_end(
            handoff_id,
            f"{name} released this conversation; Esoteric is answering again.",
            lambda lang: tr(
                lang,
                "Thanks for talking with {name}. I'm Esoteric, the AI assistant, and I'm back to "
                "help: ask me anything about your loan.",
                name=name,
            ),
            "released",
        )
        return ReleaseResult(
            True, f"Released handoff #{handoff_id}; the bot answers again.", handoff_id
        )

    async def _end(
        self,
        session: AsyncSession,
        handoff_id: int,
        status: str,
        actor: str,
        now: datetime,
        rep_id: str | None = None,
        idle_before: datetime | None = None,
    ) -> str | None:
        """End a claimed handoff and give the conversation back to the bot, in the caller's
        transaction. Returns the rep's name, ``None`` when the condition did not hold."""
        where = [Handoff.id == handoff_id, Handoff.status == HandoffStatus.CLAIMED]
        if rep_id is not None:
            where.append(Handoff.assigned_to == rep_id)
        if idle_before is not None:
            where.append(Handoff.last_activity_at < idle_before)
        done = await session.execute(
            update(Handoff)
            .where(*where)
            .values(status=status, ended_at=now, ended_by=actor)
            .execution_options(synchronize_session=False)
        )
        if not getattr(done, "rowcount", 0):
            return None
        handoff = (
            await session.execute(
                select(Handoff.conversation_id, Handoff.assigned_name).where(
                    Handoff.id == handoff_id
                )
            )
        ).one()
        await session.execute(
            update(Conversation)
            .where(
                Conversation.id == handoff.conversation_id,
                Conversation.status == ConversationStatus.HANDOFF,
            )
            .values(status=ConversationStatus.ACTIVE, assigned_to=None, last_activity_at=now)
        )
        action = "handoff_release" if status == HandoffStatus.RELEASED else "handoff_return"
        repo.audit(session, actor, action, "ok", f"handoff:{handoff_id}", now=now)
        return str(handoff.assigned_name or "The advisor")

    async def _after_end(
        self, handoff_id: int, thread_text: str, customer_text: Callable[[str], str], kind: str
    ) -> None:
        async with self.db.transaction() as session:
            conversation_id = await session.scalar(
                select(Handoff.conversation_id).where(Handoff.id == handoff_id)
            )
        await self._quietly(self._redraw(handoff_id))
        await self._quietly(self._thread(handoff_id, thread_text))
        if conversation_id is not None:
            await self._tell_customer(conversation_id, kind, customer_text)

    # -- relaying ----------------------------------------------------------------------------------

    async def relay_from_customer(self, turn: TurnData) -> tuple[Post, ...] | None:
        """The customer's message for the claimed card's thread, as a post the turn stores
        and sends (once, even if the turn runs again). ``None`` when the conversation has no
        claimed handoff (the bot then answers)."""
        async with self.db.transaction() as session:
            handoff = (
                await session.execute(
                    select(Handoff.id, Handoff.card_channel, Handoff.card_ts).where(
                        Handoff.conversation_id == turn.conversation_id,
                        Handoff.status == HandoffStatus.CLAIMED,
                    )
                )
            ).first()
            if handoff is not None:
                await session.execute(
                    update(Handoff)
                    .where(Handoff.id == handoff.id)
                    .values(last_activity_at=self.clock())
                )
        if handoff is None:
            return None
        if self.desk is None or not handoff.card_ts:
            log.warning("handoff %d has no reachable card; message kept", handoff.id)
            return ()
        who = turn.user_name or "Customer"
        text = turn.text
        if isinstance(turn.meta.get("audio"), dict) and text.strip():
            text = f"(voice note) {text}"  # the rep reads what the customer said, transcribed
        if not text.strip():
            kinds = turn.meta.get("attachments") or ["something"]
            text = f"(sent {', '.join(kinds)}: not shown here)"
        thread = ChatAddress(DESK, handoff.card_channel, handoff.card_ts)
        return (Post(thread, f"**{who}:** {text}", "relay"),)

    async def relay_from_rep(
        self, card_channel: str, card_ts: str, rep_id: str, text: str, event_id: str | None
    ) -> RelayResult:
        """A rep wrote in a card's thread: send it to the customer when that rep holds the
        conversation. Persisted first (deduplicated on the desk's event id), then delivered."""
        async with self.db.transaction() as session:
            handoff = (
                await session.scalars(
                    select(Handoff)
                    .where(Handoff.card_channel == card_channel, Handoff.card_ts == card_ts)
                    .order_by(Handoff.id.desc())
                    .limit(1)
                )
            ).first()
        if handoff is None:
            return RelayResult(RelayOutcome.NOT_A_CARD)
        if handoff.status == HandoffStatus.WAITING:
            return RelayResult(RelayOutcome.NOT_CLAIMED)
        if handoff.status != HandoffStatus.CLAIMED:
            return RelayResult(RelayOutcome.ENDED)
        if handoff.assigned_to != rep_id:
            return RelayResult(RelayOutcome.OTHER_REP, handoff.assigned_name)
        name = handoff.assigned_name or rep_id
        shown = f"**{name}:** {text}"
        now = self.clock()
        try:
            added = await self.outbox.store.add_outbound(
                Outbound(
                    handoff.conversation_id,
                    f"human:{rep_id}",
                    shown,
                    "relay",
                    {"handoff_id": handoff.id, "rep_name": name},
                    event_id=f"{DESK}:{event_id}" if event_id else None,
                ),
                now,
            )
        except IntegrityError:
            return RelayResult(RelayOutcome.DUPLICATE)
        async with self.db.transaction() as session:
            await session.execute(
                update(Handoff).where(Handoff.id == handoff.id).values(last_activity_at=now)
            )
        if added is not None:
            await self._send_pending(added[2], added[1])
        return RelayResult(RelayOutcome.RELAYED, name)

    async def _send_pending(self, chat: ChatAddress, outbox_id: int) -> None:
        """The chat's turn sends it, in order with the bot's own replies (any process may)."""
        queue = self.outbox.queue
        if queue is None:
            await self.outbox.flush_chat(chat)
        else:
            await queue.defer(TurnJob(chat, outbox_id=outbox_id))

    async def _tell_customer(
        self, conversation_id: int, kind: str, text_in: Callable[[str], str]
    ) -> None:
        """A notice from the bot to the customer in their language (``text_in(language)``),
        persisted like any reply."""
        async with self.db.transaction() as session:
            state = await session.scalar(
                select(Conversation.state).where(Conversation.id == conversation_id)
            )
        language = (state or {}).get(STATE_KEY)
        if language not in LANGUAGES:
            language = self.config.default_language
        text = text_in(language)
        added = await self.outbox.store.add_outbound(
            Outbound(conversation_id, "bot", text, "notice", {"handoff": kind}), self.clock()
        )
        if added is not None:
            await self._send_pending(added[2], added[1])

    @staticmethod
    async def _quietly(work: Awaitable[object]) -> None:
        """Desk updates after the SQL is committed: the state is right whatever Slack says, so
        a refused card redraw or thread note is logged, not raised at the rep who clicked."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sales desk update failed")

    async def _thread(self, handoff_id: int, text: str, *, broadcast: bool = False) -> None:
        ref = await self._ref(handoff_id)
        if self.desk is not None and ref is not None:
            await self.desk.post_in_thread(ref, text, broadcast=broadcast)

    # -- timers ------------------------------------------------------------------------------------

    async def tick(self) -> TickReport:
        """Run every timer that is due: post cards that never made it out, remind the desk of
        unclaimed handoffs (and tell the customer the expected wait), and give idle claimed
        conversations back to the bot. Each step is claimed with a conditional UPDATE, so two
        processes ticking at once act once."""
        report = TickReport()
        if self.desk is None:
            return report
        now = self.clock()
        sla = timedelta(minutes=self.config.sla_minutes)
        async with self.db.transaction() as session:
            cardless = list(
                (
                    await session.scalars(
                        select(Handoff.id).where(
                            Handoff.status.in_(HandoffStatus.OPEN), Handoff.card_ts.is_(None)
                        )
                    )
                ).all()
            )
            overdue = list(
                (
                    await session.execute(
                        select(Handoff.id, Handoff.reminded_at).where(
                            Handoff.status == HandoffStatus.WAITING,
                            Handoff.card_ts.is_not(None),
                            Handoff.sla_due_at <= now,
                            or_(Handoff.reminded_at.is_(None), Handoff.reminded_at <= now - sla),
                        )
                    )
                ).all()
            )
            idle = list(
                (
                    await session.scalars(
                        select(Handoff.id).where(
                            Handoff.status == HandoffStatus.CLAIMED,
                            Handoff.last_activity_at
                            < now - timedelta(minutes=self.config.idle_minutes),
                        )
                    )
                ).all()
            )
        for handoff_id in cardless:
            try:
                await self._post_card(handoff_id)
                report.cards_posted += 1
            except Exception as exc:  # the desk is down: the next tick tries again
                report.errors.append(f"card for handoff {handoff_id}: {exc}")
        open_now = self.config.hours is None or self.config.hours.is_open(now)
        for handoff_id, reminded_at in overdue if open_now else []:
            try:
                if await self._remind(handoff_id, reminded_at, now, sla):
                    report.reminded += 1
            except Exception as exc:
                report.errors.append(f"reminder for handoff {handoff_id}: {exc}")
        for handoff_id in idle:
            try:
                if await self._return_idle(handoff_id, now):
                    report.returned += 1
            except Exception as exc:
                report.errors.append(f"idle handoff {handoff_id}: {exc}")
        for problem in report.errors:
            log.warning("handoff timer: %s", problem)
        return report

    async def _remind(
        self, handoff_id: int, reminded_at: datetime | None, now: datetime, sla: timedelta
    ) -> bool:
        """Claim the reminder (a conditional UPDATE: one of two racing ticks wins), post it in
        the card's thread, and tell the customer the expected wait the first time.

        On Postgres (several processes) the post happens while the claim is uncommitted: a
        process killed during the post (a slow Slack call) rolls the claim back and the next
        tick, in any process, posts it; a racing tick waits on the row, then finds it reminded.
        On SQLite (one process) the claim commits first: a write transaction held over a Slack
        call would hold up every other write."""
        inside = self.db.is_postgres
        posted = False
        try:
            async with self.db.transaction() as session:
                condition = (
                    Handoff.reminded_at.is_(None)
                    if reminded_at is None
                    else Handoff.reminded_at == reminded_at
                )
                done = await session.execute(
                    update(Handoff)
                    .where(
                        Handoff.id == handoff_id, Handoff.status == HandoffStatus.WAITING, condition
                    )
                    .values(reminded_at=now)
                    .execution_options(synchronize_session=False)
                )
                if not getattr(done, "rowcount", 0):
                    return False
                requested_at, conversation_id = (
                    await session.execute(
                        select(Handoff.requested_at, Handoff.conversation_id).where(
                            Handoff.id == handoff_id
                        )
                    )
                ).one()
                repo.audit(
                    session, "scheduler", "handoff_remind", "ok", f"handoff:{handoff_id}", now=now
                )
                if inside:
                    await self._post_reminder(handoff_id, requested_at, now)
                    posted = True
        except asyncio.CancelledError:
            raise
        except Exception:
            if not inside or posted:
                raise  # after the claim committed (or the commit failed after the post)
            log.exception("handoff %d reminder not posted; the next tick tries again", handoff_id)
            return False
        if not inside:
            await self._post_reminder(handoff_id, requested_at, now)
        if reminded_at is None:
            minutes = self.config.sla_minutes
            await self._tell_customer(
                conversation_id,
                "wait",
                lambda lang: tr(
                    lang,
                    "Thanks for waiting: all our advisors are busy right now. The expected wait "
                    "is about {minutes} more minutes, and I'm here for questions meanwhile.",
                    minutes=minutes,
                ),
            )
        return True

    async def _post_reminder(self, handoff_id: int, requested_at: datetime, now: datetime) -> None:
        waited = max(1, int((now - requested_at).total_seconds() // 60))
        await self._thread(
            handoff_id,
            f"Reminder: this lead has waited {waited} minutes without an advisor. "
            "Press Claim to take it.",
            broadcast=True,
        )

    async def _return_idle(self, handoff_id: int, now: datetime) -> bool:
        cutoff = now - timedelta(minutes=self.config.idle_minutes)
        async with self.db.transaction() as session:
            name = await self._end(
                session, handoff_id, HandoffStatus.RETURNED, "scheduler", now, idle_before=cutoff
            )
        if name is None:
            return False
        await self._after_end(
            handoff_id,
            f"No messages for {self.config.idle_minutes} minutes: the conversation is back "
            "with Esoteric.",
            lambda lang: tr(
                lang,
                "I'm Esoteric, the AI assistant, and I'm back to help. If you'd like an advisor "
                "again, type /human.",
            ),
            "returned",
        )
        return True

    # -- figures ---------------------------------------------------------------------------

    async def open_count(self) -> int:
        async with self.db.transaction() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(Handoff)
                    .where(Handoff.status.in_(HandoffStatus.OPEN))
                )
                or 0
            )

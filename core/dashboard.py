"""The sales dashboard's figures: SQL aggregates over what the turn pipeline stores, the same
on SQLite and Postgres (SQLAlchemy Core; the only dialect-specific piece is a day's label).

The rules, one per figure (the README repeats them for the people reading the numbers):

- A period is ``[start, end)`` in UTC; ``channel`` filters by the conversation's channel.
- The funnel follows the conversations *started* in the period (a cohort), so every step is a
  subset of the conversations it counts from:
  conversations -> quotes (a bot reply carried an EMI: the scripted agent's offer stores
  ``meta.emi``, a quote PDF ``meta.document``, the LLM's ``calculate_emi`` tool call succeeded in
  ``meta.tool_calls``) -> leads (a lead with consent) -> claimed (a handoff a rep claimed) ->
  won (a lead a rep marked ``won``). Each step counts conversations, not rows.
- Per day: conversations started, messages stored (both directions) and leads with consent
  captured, by channel.
- Handoffs requested in the period: minutes from request to claim (median and p90, linear
  interpolation), SLA breaches (claimed after ``sla_due_at``, or not claimed by then and still
  waiting or ended after it), and per rep the handoffs claimed and how many of those
  conversations were won.
- The LLM: bot replies in the period. Tokens are summed from ``meta``; a turn is a reply the
  LLM agent made or fell back on (``meta.fallback`` present); the fallback rate is
  fallback turns / turns; a breaker opening is a turn that saw the breaker ``open`` when the
  turn before it had not; latency percentiles are over every bot reply's ``meta.latency_ms``.
- Knowledge gaps: bot replies that answered a question with the knowledge base's "I don't
  know" (the scripted agent's knowledge answers store ``meta.citations``; an empty list is the
  answer with nothing to cite), with the customer's question that they answered, grouped by
  similarity.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    String,
    and_,
    case,
    cast,
    create_engine,
    distinct,
    event,
    func,
    or_,
    select,
    true,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.orm import aliased

from core.messages import utcnow
from core.store.database import Database
from core.store.models import Conversation, Handoff, Lead, Message, User

T = TypeVar("T")

STEPS = ("conversations", "quotes", "leads", "claimed", "won")
CURRENCY = "USD"
# The LLM's EMI tool called successfully, as its call record reads in the reply's stored meta
# (``{"name": ..., "ok": true, ...}``, written by json.dumps on both databases).
EMI_TOOL_DONE = '%"name": "calculate_emi", "ok": true%'
# Questions this similar (rapidfuzz token_set_ratio, 0-100) are one knowledge gap.
GAP_SIMILARITY = 80
GAP_EXAMPLES = 5
SEARCH_LIMIT = 50


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    channel: str | None = None

    @classmethod
    def days_back(cls, days: int, channel: str | None = None, today: date | None = None) -> Period:
        """Today (UTC) and the ``days - 1`` days before it."""
        last = today or utcnow().date()
        return cls.dates(last - timedelta(days=days - 1), last, channel)

    @classmethod
    def dates(cls, first: date, last: date, channel: str | None = None) -> Period:
        """From the start of ``first`` to the end of ``last`` (both days included)."""
        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        return cls(start, end, channel)

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(microseconds=1)).date()

    def as_json(self) -> dict[str, str]:
        return {"from": self.first_day.isoformat(), "to": self.last_day.isoformat()}

    def day_labels(self) -> list[str]:
        days = (self.last_day - self.first_day).days + 1
        return [(self.first_day + timedelta(days=i)).isoformat() for i in range(days)]


@dataclass(frozen=True)
class FunnelStep:
    step: str
    count: int
    conversion: float | None


@dataclass(frozen=True)
class DayRow:
    day: str
    channel: str
    conversations: int = 0
    messages: int = 0
    leads: int = 0


@dataclass(frozen=True)
class RepRow:
    rep: str
    name: str | None
    claims: int
    wins: int


@dataclass(frozen=True)
class HandoffFigures:
    median_minutes_to_claim: float | None
    p90_minutes_to_claim: float | None
    sla_breaches: int
    reps: list[RepRow]


@dataclass(frozen=True)
class LlmFigures:
    prompt_tokens: int
    completion_tokens: int
    estimated_cost: Decimal
    turns: int
    fallback_rate: float | None
    breaker_openings: int
    latency_p50: float | None
    latency_p95: float | None


@dataclass(frozen=True)
class GapGroup:
    question: str
    count: int
    example_conversation: int
    examples: list[str]


@dataclass(frozen=True)
class ConversationHit:
    id: int
    channel: str
    customer: str | None
    phone: str | None
    started_at: datetime
    status: str


@dataclass(frozen=True)
class TranscriptLine:
    at: datetime
    direction: str
    author: str
    text: str
    citations: list[Any]
    tool_calls: list[Any]
    handoff: bool


@dataclass(frozen=True)
class Transcript:
    id: int
    channel: str
    customer: str | None
    phone: str | None
    messages: list[TranscriptLine] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) by linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mask_phone(phone: str | None) -> str | None:
    """``+919876543210`` -> ``+91 98xxxxx210``: the country code, two digits and the last three."""
    if not phone:
        return None
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 6:
        return "x" * len(digits)
    country = ""
    if phone.strip().startswith("+") and len(digits) > 10:
        country, digits = "+" + digits[:-10], digits[-10:]
    masked = digits[:2] + "x" * (len(digits) - 5) + digits[-3:]
    return f"{country} {masked}" if country else masked


# An Indian mobile number as customers and the bot write it: +91 98765 43210, 9876543210, ...
_PHONE_IN_TEXT = re.compile(r"(?<![\w+])(?:\+?91[\s-]?)?[6-9]\d{4}[\s-]?\d{5}(?!\w)")


def mask_phones_in(text: str) -> str:
    """``text`` with every mobile number in it masked as ``mask_phone`` masks one."""
    return _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group()) or "", text)


def normalise_question(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def group_questions(items: Iterable[tuple[str, int, datetime]]) -> list[GapGroup]:
    """Questions (text, conversation id, when) grouped by similarity, most frequent first."""
    from rapidfuzz import fuzz

    by_text: dict[str, list[tuple[str, int, datetime]]] = defaultdict(list)
    for text, conversation_id, at in items:
        key = normalise_question(text)
        if key:
            by_text[key].append((text, conversation_id, at))
    # The most asked wording first becomes its group's representative.
    groups: list[tuple[str, list[tuple[str, int, datetime]]]] = []
    for key in sorted(by_text, key=lambda k: (-len(by_text[k]), k)):
        for representative, members in groups:
            if fuzz.token_set_ratio(key, representative) >= GAP_SIMILARITY:
                members.extend(by_text[key])
                break
        else:
            groups.append((key, list(by_text[key])))
    result = []
    for _, members in groups:
        wordings = Counter(text.strip() for text, _, _ in members)
        latest = max(members, key=lambda m: (m[2], m[1]))
        result.append(
            GapGroup(
                question=wordings.most_common(1)[0][0],
                count=len(members),
                example_conversation=latest[1],
                examples=[w for w, _ in wordings.most_common(GAP_EXAMPLES)],
            )
        )
    result.sort(key=lambda g: (-g.count, g.question))
    return result


def _day(column: Any, dialect: str) -> ColumnElement[str]:
    """A stored UTC time's day as ``YYYY-MM-DD``. SQLite keeps times as text in that format."""
    if dialect == "sqlite":
        return func.substr(column, 1, 10)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


def _in_period(column: Any, period: Period) -> ColumnElement[bool]:
    return and_(column >= period.start, column < period.end)


def _cohort(period: Period) -> Select[tuple[int]]:
    """The conversations started in the period (and on its channel)."""
    query = select(Conversation.id).where(_in_period(Conversation.started_at, period))
    if period.channel:
        query = query.where(Conversation.channel == period.channel)
    return query


def _quote_given() -> ColumnElement[bool]:
    meta = Message.meta
    # A text search first (cheap: the JSON's own text), then the JSON's field (parsed) only for
    # the few replies that mention it.
    raw = cast(meta, String)
    return or_(
        and_(raw.like('%"emi"%'), meta["emi"].as_string().is_not(None)),
        and_(raw.like('%"document"%'), meta["document"].as_string().is_not(None)),
        raw.like(EMI_TOOL_DONE),
    )


# -- the queries (plain synchronous Core on one connection) ----------------------------------


def funnel_on(conn: Connection, period: Period) -> list[FunnelStep]:
    cohort = _cohort(period).scalar_subquery()
    conversations = conn.scalar(select(func.count()).select_from(_cohort(period).subquery()))
    quotes = conn.scalar(
        select(func.count(distinct(Message.conversation_id))).where(
            Message.conversation_id.in_(cohort),
            # Implied by the cohort, but it lets the planner range over the period's messages
            # (ix_messages_created) instead of every message ever stored.
            Message.created_at >= period.start,
            Message.direction == "out",
            _quote_given(),
        )
    )
    leads = conn.scalar(
        select(func.count(distinct(Lead.conversation_id))).where(
            Lead.conversation_id.in_(cohort), Lead.consent == true()
        )
    )
    claimed = conn.scalar(
        select(func.count(distinct(Handoff.conversation_id))).where(
            Handoff.conversation_id.in_(cohort),
            Handoff.assigned_to.is_not(None),
            Handoff.claimed_at.is_not(None),
        )
    )
    won = conn.scalar(
        select(func.count(distinct(Lead.conversation_id))).where(
            Lead.conversation_id.in_(cohort), Lead.status == "won"
        )
    )
    counts = [int(c or 0) for c in (conversations, quotes, leads, claimed, won)]
    steps = []
    for i, (name, count) in enumerate(zip(STEPS, counts, strict=True)):
        before = counts[i - 1] if i else None
        conversion = round(count / before, 4) if before else None
        steps.append(FunnelStep(name, count, conversion))
    return steps


def daily_on(conn: Connection, period: Period) -> list[DayRow]:
    dialect = conn.dialect.name
    figures: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: {"conversations": 0, "messages": 0, "leads": 0}
    )
    # Each figure: what is counted, when it happened, its channel, and any join and condition.
    counted = (
        ("conversations", Conversation.started_at, Conversation.channel, None),
        ("messages", Message.created_at, Message.channel, None),
        ("leads", Lead.created_at, Conversation.channel, Lead.consent == true()),
    )
    for name, at, channel_column, condition in counted:
        day = _day(at, dialect)
        query = (
            select(day, channel_column, func.count())
            .where(_in_period(at, period))
            .group_by(day, channel_column)
        )
        if name == "leads":
            query = query.join(Conversation, Conversation.id == Lead.conversation_id)
        if condition is not None:
            query = query.where(condition)
        if period.channel:
            query = query.where(channel_column == period.channel)
        for label, channel, count in conn.execute(query):
            figures[(label, channel)][name] = int(count)
    # Every day of the period for every channel seen, zeros included: a chart needs the gaps.
    channels = sorted(
        {channel for _, channel in figures} | ({period.channel} if period.channel else set())
    )
    return [
        DayRow(label, channel, **figures.get((label, channel), {}))
        for label in period.day_labels()
        for channel in channels
    ]


def handoffs_on(conn: Connection, period: Period, now: datetime) -> HandoffFigures:
    query = select(
        Handoff.conversation_id,
        Handoff.requested_at,
        Handoff.claimed_at,
        Handoff.sla_due_at,
        Handoff.ended_at,
        Handoff.assigned_to,
        Handoff.assigned_name,
    ).where(_in_period(Handoff.requested_at, period))
    if period.channel:
        query = query.join(Conversation, Conversation.id == Handoff.conversation_id).where(
            Conversation.channel == period.channel
        )
    rows = conn.execute(query.order_by(Handoff.id)).all()
    won = set(
        conn.scalars(
            select(distinct(Lead.conversation_id)).where(
                Lead.status == "won",
                Lead.conversation_id.in_({r.conversation_id for r in rows if r.assigned_to}),
            )
        )
    )
    minutes: list[float] = []
    breaches = 0
    claims: Counter[str] = Counter()
    wins: dict[str, set[int]] = defaultdict(set)
    names: dict[str, str | None] = {}
    for row in rows:
        if row.claimed_at is not None:
            minutes.append((row.claimed_at - row.requested_at).total_seconds() / 60)
            breaches += row.claimed_at > row.sla_due_at
        else:
            breaches += (row.ended_at or now) > row.sla_due_at
        if row.assigned_to and row.claimed_at is not None:
            claims[row.assigned_to] += 1
            names[row.assigned_to] = row.assigned_name or names.get(row.assigned_to)
            if row.conversation_id in won:
                wins[row.assigned_to].add(row.conversation_id)
    reps = [
        RepRow(rep, names.get(rep), count, len(wins[rep]))
        for rep, count in sorted(claims.items(), key=lambda item: (-item[1], item[0]))
    ]
    median = percentile(minutes, 0.5)
    p90 = percentile(minutes, 0.9)
    return HandoffFigures(
        None if median is None else round(median, 2),
        None if p90 is None else round(p90, 2),
        int(breaches),
        reps,
    )


def _replies(period: Period, postgres: bool) -> Any:
    """The bot's replies in the period, with their meta. On Postgres the ``json`` column is
    text, parsed again by every ``->>``: it is turned into ``jsonb`` once per row instead."""
    meta: Any = cast(Message.meta, JSONB) if postgres else Message.meta
    query = select(Message.id, Message.created_at, meta.label("meta")).where(
        _in_period(Message.created_at, period),
        Message.direction == "out",
        Message.author == "bot",
    )
    if period.channel:
        query = query.where(Message.channel == period.channel)
    replies = query.cte("replies")
    return replies.prefix_with("MATERIALIZED") if postgres else replies


def _sqlite_breaker_and_latency(conn: Connection, period: Period) -> list[tuple[Any, Any]]:
    """Every reply's breaker state and latency in the period, in time order, straight from the
    driver: SQLite has neither percentiles nor a cheap window over JSON, and building a
    SQLAlchemy row for each of tens of thousands of pairs cost more than the query."""
    sql = (
        "SELECT json_extract(meta, '$.breaker'), json_extract(meta, '$.latency_ms')"
        " FROM messages WHERE created_at >= ? AND created_at < ?"
        " AND direction = 'out' AND author = 'bot'"
    )
    params: list[Any] = [_sqlite_time(period.start), _sqlite_time(period.end)]
    if period.channel:
        sql += " AND channel = ?"
        params.append(period.channel)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        return list(cursor.execute(sql + " ORDER BY created_at, id", params).fetchall())
    finally:
        cursor.close()


def _sqlite_time(at: datetime) -> str:
    # How SQLAlchemy's DateTime stores times on SQLite (and the pipeline's own writes do).
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def llm_on(conn: Connection, period: Period, price_per_million: Decimal) -> LlmFigures:
    postgres = conn.dialect.name == "postgresql"
    replies = _replies(period, postgres)
    meta = replies.c.meta
    breaker = meta["breaker"].as_string()
    fallback = meta["fallback"].as_boolean()
    latency = meta["latency_ms"].as_float()
    sums: list[Any] = [
        func.coalesce(func.sum(meta["prompt_tokens"].as_integer()), 0),
        func.coalesce(func.sum(meta["completion_tokens"].as_integer()), 0),
        func.count(fallback),
        func.coalesce(func.sum(case((fallback == true(), 1), else_=0)), 0),
    ]
    if postgres:
        # One pass: each reply's figures, its breaker state beside the state of the reply
        # before it that has one (an opening is "open" after anything else), percentiles.
        fields = select(
            meta["prompt_tokens"].as_integer().label("prompt"),
            meta["completion_tokens"].as_integer().label("completion"),
            fallback.label("fallback"),
            latency.label("latency"),
            breaker.label("breaker"),
            func.lag(breaker)
            .over(partition_by=breaker.is_(None), order_by=(replies.c.created_at, replies.c.id))
            .label("previous"),
        ).subquery()
        f = fields.c
        opened = and_(f.breaker == "open", or_(f.previous.is_(None), f.previous != "open"))
        row = conn.execute(
            select(
                func.coalesce(func.sum(f.prompt), 0),
                func.coalesce(func.sum(f.completion), 0),
                func.count(f.fallback),
                func.coalesce(func.sum(case((f.fallback == true(), 1), else_=0)), 0),
                func.coalesce(func.sum(case((opened, 1), else_=0)), 0),
                func.percentile_cont(0.5).within_group(f.latency),
                func.percentile_cont(0.95).within_group(f.latency),
            )
        ).one()
        totals, openings, p50, p95 = row[:4], int(row[4] or 0), row[5], row[6]
    else:
        totals = conn.execute(select(*sums)).one()
        states = _sqlite_breaker_and_latency(conn, period)
        openings, was_open, latencies = 0, False, []
        for state, value in states:
            if state is not None:
                openings += state == "open" and not was_open
                was_open = state == "open"
            if value is not None:
                latencies.append(float(value))
        p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    prompt, completion, turns, fallbacks = (int(v or 0) for v in totals)
    cost = (Decimal(prompt + completion) * price_per_million / Decimal(1_000_000)).quantize(
        Decimal("0.0001"), rounding=ROUND_HALF_UP
    )
    return LlmFigures(
        prompt,
        completion,
        cost,
        turns,
        round(fallbacks / turns, 4) if turns else None,
        openings,
        None if p50 is None else round(float(p50), 2),
        None if p95 is None else round(float(p95), 2),
    )


def gaps_on(conn: Connection, period: Period) -> list[GapGroup]:
    reply = aliased(Message)
    question = aliased(Message)
    query = (
        select(question.text, reply.conversation_id, reply.created_at)
        .join(question, question.id == reply.reply_to_id)
        .where(
            _in_period(reply.created_at, period),
            reply.direction == "out",
            reply.meta["citations"].as_string() == "[]",
        )
    )
    if period.channel:
        query = query.where(reply.channel == period.channel)
    return group_questions((t, c, at) for t, c, at in conn.execute(query))


def search_on(conn: Connection, query_text: str, channel: str | None) -> list[ConversationHit]:
    wanted = query_text.strip().casefold()
    digits = re.sub(r"\D", "", query_text)
    lead_match = [func.lower(Lead.name).contains(wanted, autoescape=True)]
    user_match = [func.lower(User.display_name).contains(wanted, autoescape=True)]
    if len(digits) >= 3:
        lead_match.append(Lead.phone.contains(digits, autoescape=True))
        user_match.append(User.phone.contains(digits, autoescape=True))
    by_lead = select(Lead.conversation_id).where(
        Lead.conversation_id.is_not(None), or_(*lead_match)
    )
    by_user = (
        select(Conversation.id).join(User, User.id == Conversation.user_id).where(or_(*user_match))
    )
    query = (
        select(Conversation)
        .order_by(Conversation.started_at.desc(), Conversation.id.desc())
        .limit(SEARCH_LIMIT)
    )
    if wanted:  # nothing asked: the latest conversations
        query = query.where(or_(Conversation.id.in_(by_lead), Conversation.id.in_(by_user)))
    if channel:
        query = query.where(Conversation.channel == channel)
    rows = conn.execute(
        query.with_only_columns(
            Conversation.id,
            Conversation.channel,
            Conversation.started_at,
            Conversation.status,
            Conversation.user_id,
        )
    ).all()
    people = _people(conn, [(r.id, r.user_id) for r in rows])
    return [
        ConversationHit(r.id, r.channel, *people[r.id], started_at=r.started_at, status=r.status)
        for r in rows
    ]


def _people(
    conn: Connection, conversations: list[tuple[int, int | None]]
) -> dict[int, tuple[str | None, str | None]]:
    """Each conversation's customer name and phone: its latest lead's, else its user's."""
    ids = [c for c, _ in conversations]
    leads: dict[int, tuple[str | None, str | None]] = {}
    for conversation_id, name, phone in conn.execute(
        select(Lead.conversation_id, Lead.name, Lead.phone)
        .where(Lead.conversation_id.in_(ids))
        .order_by(Lead.id)
    ):
        old_name, old_phone = leads.get(conversation_id, (None, None))
        leads[conversation_id] = (name or old_name, phone or old_phone)
    user_ids = {u for _, u in conversations if u is not None}
    users = {
        u.id: (u.display_name, u.phone)
        for u in conn.execute(
            select(User.id, User.display_name, User.phone).where(User.id.in_(user_ids))
        )
    }
    result = {}
    for conversation_id, user_id in conversations:
        lead_name, lead_phone = leads.get(conversation_id, (None, None))
        user_name, user_phone = users.get(user_id, (None, None)) if user_id else (None, None)
        result[conversation_id] = (lead_name or user_name, lead_phone or user_phone)
    return result


def transcript_on(conn: Connection, conversation_id: int) -> Transcript | None:
    row = conn.execute(
        select(Conversation.id, Conversation.channel, Conversation.user_id).where(
            Conversation.id == conversation_id
        )
    ).first()
    if row is None:
        return None
    name, phone = _people(conn, [(row.id, row.user_id)])[row.id]
    windows = conn.execute(
        select(Handoff.claimed_at, Handoff.ended_at).where(
            Handoff.conversation_id == conversation_id, Handoff.claimed_at.is_not(None)
        )
    ).all()

    def in_handoff(at: datetime) -> bool:
        return any(start <= at and (end is None or at <= end) for start, end in windows)

    lines = []
    for m in conn.execute(
        select(Message.created_at, Message.direction, Message.author, Message.text, Message.meta)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.id)
    ):
        meta = m.meta or {}
        lines.append(
            TranscriptLine(
                at=m.created_at,
                direction=m.direction,
                author=m.author,
                text=m.text,
                citations=list(meta.get("citations") or []),
                tool_calls=list(meta.get("tool_calls") or []),
                handoff=m.author.startswith("human:") or in_handoff(m.created_at),
            )
        )
    return Transcript(row.id, row.channel, name, phone, lines)


def leads_on(conn: Connection, period: Period) -> list[dict[str, Any]]:
    """Leads captured in the period, for the CSV export (phones whole: admins only)."""
    query = (
        select(
            Lead.id,
            Lead.created_at,
            Conversation.channel,
            Lead.conversation_id,
            Lead.product,
            Lead.amount,
            Lead.tenure_months,
            Lead.emi,
            Lead.monthly_income,
            Lead.eligible,
            Lead.name,
            Lead.phone,
            Lead.consent,
            Lead.status,
        )
        .outerjoin(Conversation, Conversation.id == Lead.conversation_id)
        .where(_in_period(Lead.created_at, period))
        .order_by(Lead.created_at, Lead.id)
    )
    if period.channel:
        query = query.where(Conversation.channel == period.channel)
    return [dict(r._mapping) for r in conn.execute(query)]


# -- the service -----------------------------------------------------------------------------


class Dashboard:
    """The dashboard's reads. On SQLite they run on a read-only connection of their own in a
    worker thread: the store's own connections begin every transaction IMMEDIATE (taking the
    write lock), and a report must neither hold that lock nor block the event loop."""

    def __init__(
        self,
        db: Database,
        price_per_million_tokens: Decimal = Decimal("0.59"),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.price = price_per_million_tokens
        self.clock = clock
        self._reader: Engine | None = None

    def _sqlite_reader(self) -> Engine:
        if self._reader is None:
            url = make_url(self.db.engine.url).set(drivername="sqlite")
            reader = create_engine(url, connect_args={"check_same_thread": False})

            @event.listens_for(reader, "connect")
            def _read_only(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA query_only=1")
                cursor.execute("PRAGMA busy_timeout=5000")
                cursor.execute("PRAGMA mmap_size=268435456")
                cursor.execute("PRAGMA cache_size=-32000")
                cursor.close()

            self._reader = reader
        return self._reader

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        if self.db.is_sqlite:
            reader = self._sqlite_reader()

            def run() -> T:
                with reader.connect() as conn:
                    return fn(conn)

            return await asyncio.to_thread(run)
        async with self.db.engine.connect() as conn:
            # A report's plan is cheap to run and costly to compile: JIT only adds latency.
            await conn.execute(sql_text("SET LOCAL jit = off"))
            return await conn.run_sync(fn)

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await asyncio.to_thread(reader.dispose)

    async def funnel(self, period: Period) -> list[FunnelStep]:
        return await self._read(lambda c: funnel_on(c, period))

    async def daily(self, period: Period) -> list[DayRow]:
        return await self._read(lambda c: daily_on(c, period))

    async def handoffs(self, period: Period) -> HandoffFigures:
        now = self.clock()
        return await self._read(lambda c: handoffs_on(c, period, now))

    async def llm(self, period: Period) -> LlmFigures:
        return await self._read(lambda c: llm_on(c, period, self.price))

    async def gaps(self, period: Period) -> list[GapGroup]:
        return await self._read(lambda c: gaps_on(c, period))

    async def search(self, text: str, channel: str | None = None) -> list[ConversationHit]:
        return await self._read(lambda c: search_on(c, text, channel))

    async def transcript(self, conversation_id: int) -> Transcript | None:
        return await self._read(lambda c: transcript_on(c, conversation_id))

    async def leads(self, period: Period) -> list[dict[str, Any]]:
        return await self._read(lambda c: leads_on(c, period))


def funnel_table(period: Period, steps: Sequence[FunnelStep]) -> str:
    """The funnel as a plain-text table (``esoteric report``)."""
    title = f"Sales funnel {period.first_day} to {period.last_day}"
    if period.channel:
        title += f" ({period.channel})"
    lines = [title, f"{'step':<14}{'count':>10}{'conversion':>12}"]
    for step in steps:
        conversion = "" if step.conversion is None else f"{step.conversion * 100:.1f}%"
        lines.append(f"{step.step:<14}{step.count:>10}{conversion:>12}")
    return "\n".join(lines)

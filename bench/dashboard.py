"""The sales dashboard's aggregates on a year of data, on SQLite and on Postgres.

Seeds (bulk INSERTs on SQLite, COPY on Postgres, into a schema made by the migrations, indexes
included) 100,000 conversations over the last 365 days, 1,000,000 messages (about ten a
conversation, replies carrying the meta the pipeline stores: latency, LLM tokens, fallbacks,
breaker states, quotes, "I don't know" answers), 10,000 leads and a handoff for each lead, then
times each JSON endpoint's aggregate (``core.dashboard.Dashboard``, what the routes call) for a
30-day window ending today: p50 and p95 over --runs runs each (after one warm-up run).
Target: p95 under 300 ms for every endpoint on both databases.

The floor, in the same run, on each database: the endpoint's biggest statement (the one that
reads the most rows; on SQLite the LLM figures are two equal scans, both counted), written out
as plain SQL and run through the bare driver (``sqlite3`` on the same file in a worker thread,
with the reader's cache and mmap settings; ``asyncpg`` with JIT off, as the dashboard runs),
every row fetched, no Esoteric code and no SQLAlchemy. It is the same aggregation over the same
rows and indexes, so the ratio (Esoteric's p95 / the floor's p95) is what Esoteric adds: its
other, smaller statements, SQLAlchemy and the Python that shapes the answer. Floor runs
alternate with the endpoint's own. Machines differ: the ratio is the figure to compare.

Postgres: a database of its own, ``esoteric_bench_dashboard``, created and dropped (the server
from ESOTERIC_TEST_POSTGRES, as the tests use). SQLite: a file in a temporary directory.

    python bench/dashboard.py
    python bench/dashboard.py --messages 200000 --conversations 20000 --leads 2000 --only sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from core.dashboard import Dashboard, Period  # noqa: E402
from core.store.database import create_database  # noqa: E402
from core.store.schema import upgrade_to_head  # noqa: E402

BENCH_DB = "esoteric_bench_dashboard"
POSTGRES_ADMIN_DSN = os.environ.get(
    "ESOTERIC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TARGET_MS = 300.0
CHANNELS = ("telegram", "web", "slack")
REPS = [(f"U0REP{i:03d}", f"Rep {i}") for i in range(12)]
GAP_QUESTIONS = [
    "Can I pay my EMI with bitcoin?",
    "can i pay emi using crypto",
    "Do you give loans to NRIs?",
    "What are your branch office hours?",
    "Is there a loan for buying a horse?",
    "Can my company guarantee the loan?",
    "Do you lend against mutual funds?",
    "What is the penalty if I pay late twice?",
]
CHUNK = 50_000
SEARCH_TEXT = "lead person 4242"
SEARCH_DIGITS = "4242"
TRANSCRIPT_ID = 4242
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


class Seed:
    """Rows as plain tuples, in the tables' column order, generated in chunks."""

    def __init__(self, conversations: int, messages: int, leads: int, now: datetime) -> None:
        self.rng = random.Random(18)
        self.now = now
        self.n_conversations = conversations
        self.n_messages = messages
        self.n_leads = leads
        year = 365 * 24 * 3600
        # In time order, as a live database fills: ids and times grow together.
        self.started = sorted(
            now - timedelta(seconds=self.rng.uniform(600, year)) for _ in range(conversations)
        )
        self.channel = [self.rng.choice(CHANNELS) for _ in range(conversations)]

    def users(self) -> Iterator[tuple[Any, ...]]:
        for i in range(self.n_conversations):
            at = self.started[i]
            yield (
                i + 1,
                self.channel[i],
                f"ext-{i}",
                f"Customer {i}",
                f"+9198{i:08d}",
                False,
                False,
                at,
                at,
            )

    def conversations(self) -> Iterator[tuple[Any, ...]]:
        for i in range(self.n_conversations):
            at = self.started[i]
            yield (
                i + 1,
                self.channel[i],
                f"chat-{i}",
                "",
                i + 1,
                "closed",
                at,
                at + timedelta(minutes=20),
                at + timedelta(minutes=50),
                "idle",
                "{}",
                False,
            )

    def messages(self) -> Iterator[tuple[Any, ...]]:
        rng = self.rng
        per = self.n_messages // self.n_conversations
        extra = self.n_messages - per * self.n_conversations
        message_id = 0
        for i in range(self.n_conversations):
            count = per + (1 if i < extra else 0)
            at = self.started[i]
            quoted = rng.random() < 0.35
            llm = rng.random() < 0.6
            last_in = 0
            for k in range(count):
                message_id += 1
                at += timedelta(seconds=rng.uniform(5, 90))
                if k % 2 == 0:
                    gap = rng.random() < 0.03
                    text = rng.choice(GAP_QUESTIONS) if gap else f"message {k} of customer {i}"
                    last_in = message_id
                    yield (
                        message_id, i + 1, self.channel[i], "in", f"user:{i + 1}", text,
                        "answered", at, None, "{}", i + 1,
                    )  # fmt: skip
                    continue
                meta: dict[str, Any] = {"latency_ms": round(rng.lognormvariate(4.5, 0.6), 2)}
                if llm:
                    fallback = rng.random() < 0.05
                    meta.update(
                        model="llama-3.3-70b-versatile",
                        prompt_tokens=0 if fallback else rng.randint(600, 2000),
                        completion_tokens=0 if fallback else rng.randint(40, 300),
                        fallback=fallback,
                        breaker="open" if fallback and rng.random() < 0.3 else "closed",
                        tool_calls=[],
                    )
                if quoted and k == 5:
                    meta.update(emi="21695.00", eligible=True)
                if rng.random() < 0.03:
                    meta["citations"] = []
                elif rng.random() < 0.3:
                    meta["citations"] = [{"source": "faq.md", "title": "FAQ", "score": 0.71}]
                yield (
                    message_id, i + 1, self.channel[i], "out", "bot", f"reply {k}", "sent", at,
                    last_in or None, json.dumps(meta), None,
                )  # fmt: skip

    def leads(self) -> Iterator[tuple[Any, ...]]:
        rng = random.Random(7)
        chosen = rng.sample(range(self.n_conversations), self.n_leads)
        for lead_id, i in enumerate(chosen, start=1):
            at = self.started[i] + timedelta(minutes=8)
            consent = rng.random() < 0.85
            yield (
                lead_id, i + 1, i + 1, "home", Decimal(2_500_000), 240, Decimal(120_000),
                Decimal("21695.00"), True, f"Lead Person {i}", f"+9198{i:08d}", consent,
                at if consent else None, rng.choice(("new", "contacted", "won", "lost")), at,
            )  # fmt: skip

    def handoffs(self) -> Iterator[tuple[Any, ...]]:
        rng = random.Random(9)
        for lead in self.leads():
            lead_id, conversation_id, at = lead[0], lead[1], lead[14]
            claimed = rng.random() < 0.8
            rep, name = rng.choice(REPS)
            wait = timedelta(minutes=rng.uniform(0.5, 30))
            yield (
                lead_id, conversation_id, lead_id, "lead", "released" if claimed else "returned",
                at, rep if claimed else None, name if claimed else None,
                at + wait if claimed else None, at + timedelta(minutes=10), at + wait,
                at + timedelta(minutes=40),
            )  # fmt: skip


COLUMNS = {
    "users": "id, channel, external_id, display_name, phone, broadcast_opt_in, banned, "
    "created_at, last_seen_at",
    "conversations": "id, channel, chat_key, thread, user_id, status, started_at, "
    "last_activity_at, closed_at, close_reason, state, paused",
    "messages": "id, conversation_id, channel, direction, author, text, status, created_at, "
    "reply_to_id, meta, user_id",
    "leads": "id, conversation_id, user_id, product, amount, tenure_months, monthly_income, emi, "
    "eligible, name, phone, consent, consent_at, status, created_at",
    "handoffs": "id, conversation_id, lead_id, reason, status, requested_at, assigned_to, "
    "assigned_name, claimed_at, sla_due_at, last_activity_at, ended_at",
}


def _chunks(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(SQLITE_TIME)
    if isinstance(value, Decimal):
        return str(value)
    return value


def _tables(seed: Seed) -> list[tuple[str, Callable[[], Iterator[tuple[Any, ...]]]]]:
    return [
        ("users", seed.users),
        ("conversations", seed.conversations),
        ("messages", seed.messages),
        ("leads", seed.leads),
        ("handoffs", seed.handoffs),
    ]


def seed_sqlite(path: Path, seed: Seed) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for table, rows in _tables(seed):
            columns = COLUMNS[table]
            marks = ", ".join("?" for _ in columns.split(","))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            for chunk in _chunks(rows()):
                conn.executemany(sql, [tuple(map(_sqlite_value, row)) for row in chunk])
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def seed_postgres(dsn: str, seed: Seed) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for table, rows in _tables(seed):
            columns = [c.strip() for c in COLUMNS[table].split(",")]
            for chunk in _chunks(rows()):
                await conn.copy_records_to_table(table, records=chunk, columns=columns)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


# -- the floor: each endpoint's biggest statement as plain SQL, through the bare driver ---------

SQL = tuple[str, list[Any]]


def floor_statements(postgres: bool, period: Period) -> dict[str, tuple[str, list[SQL]]]:
    """For each endpoint: what its floor is, and the statements (``?`` for parameters)."""

    def field(name: str, meta: str = "meta") -> str:
        return f"{meta}->>'{name}'" if postgres else f"json_extract({meta}, '$.{name}')"

    def when(at: datetime) -> Any:
        return at if postgres else _sqlite_value(at)

    raw = "meta::text" if postgres else "meta"
    day = (
        "to_char(timezone('UTC', created_at), 'YYYY-MM-DD')"
        if postgres
        else "substr(created_at, 1, 10)"
    )
    span = [when(period.start), when(period.end)]

    def quotes(channel: str | None) -> SQL:
        cohort = "SELECT id FROM conversations WHERE started_at >= ? AND started_at < ?"
        params = [*span]
        if channel:
            cohort += " AND channel = ?"
            params.append(channel)
        sql = (
            f"SELECT count(DISTINCT conversation_id) FROM messages WHERE conversation_id IN "
            f"({cohort}) AND created_at >= ? AND direction = 'out' AND ("
            f"{raw} LIKE '%\"emi\"%' AND {field('emi')} IS NOT NULL"
            f" OR {raw} LIKE '%\"document\"%' AND {field('document')} IS NOT NULL"
            f' OR {raw} LIKE \'%"name": "calculate_emi", "ok": true%\')'
        )
        return sql, [*params, when(period.start)]

    replies = (
        "FROM messages WHERE created_at >= ? AND created_at < ?"
        " AND direction = 'out' AND author = 'bot'"
    )
    if postgres:
        llm: list[SQL] = [
            (
                "WITH replies AS MATERIALIZED (SELECT id, created_at, meta::jsonb AS meta "
                f"{replies}) "
                "SELECT coalesce(sum(prompt), 0), coalesce(sum(completion), 0), count(fallback),"
                " coalesce(sum(CASE WHEN fallback THEN 1 ELSE 0 END), 0),"
                " coalesce(sum(CASE WHEN breaker = 'open' AND (previous IS NULL"
                " OR previous <> 'open') THEN 1 ELSE 0 END), 0),"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY latency),"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency) FROM ("
                "SELECT (meta->>'prompt_tokens')::int AS prompt,"
                " (meta->>'completion_tokens')::int AS completion,"
                " (meta->>'fallback')::boolean AS fallback,"
                " (meta->>'latency_ms')::float AS latency, meta->>'breaker' AS breaker,"
                " lag(meta->>'breaker') OVER (PARTITION BY meta->>'breaker' IS NULL"
                " ORDER BY created_at, id) AS previous FROM replies) AS f",
                span,
            )
        ]
        llm_what = "tokens, fallbacks, breaker openings and latency percentiles in one statement"
    else:
        llm = [
            (
                f"SELECT coalesce(sum({field('prompt_tokens')}), 0),"
                f" coalesce(sum({field('completion_tokens')}), 0), count({field('fallback')}),"
                f" coalesce(sum(CASE WHEN {field('fallback')} = 1 THEN 1 ELSE 0 END), 0) {replies}",
                span,
            ),
            (
                f"SELECT {field('breaker')}, {field('latency_ms')} {replies}"
                " ORDER BY created_at, id",
                span,
            ),
        ]
        llm_what = "the token sums, then every reply's breaker state and latency"
    search = [f"%{SEARCH_TEXT}%", f"%{SEARCH_DIGITS}%"]
    return {
        "funnel": ("conversations in the cohort with a quote", [quotes(None)]),
        "daily": (
            "messages by day and channel",
            [
                (
                    f"SELECT {day}, channel, count(*) FROM messages"
                    " WHERE created_at >= ? AND created_at < ? GROUP BY 1, 2",
                    span,
                )
            ],
        ),
        "handoffs": (
            "the period's handoffs",
            [
                (
                    "SELECT conversation_id, requested_at, claimed_at, sla_due_at, ended_at,"
                    " assigned_to, assigned_name FROM handoffs"
                    " WHERE requested_at >= ? AND requested_at < ? ORDER BY id",
                    span,
                )
            ],
        ),
        "llm": (llm_what, llm),
        "gaps": (
            "replies with nothing to cite, joined to their questions",
            [
                (
                    "SELECT q.text, r.conversation_id, r.created_at FROM messages AS r"
                    " JOIN messages AS q ON q.id = r.reply_to_id"
                    " WHERE r.created_at >= ? AND r.created_at < ? AND r.direction = 'out'"
                    f" AND {field('citations', 'r.meta')} = '[]'",
                    span,
                )
            ],
        ),
        "conversations?q=": (
            "conversations matching a lead's or user's name or phone",
            [
                (
                    "SELECT id, channel, started_at, status, user_id FROM conversations"
                    " WHERE id IN (SELECT conversation_id FROM leads"
                    " WHERE conversation_id IS NOT NULL AND (lower(name) LIKE ? OR phone LIKE ?))"
                    " OR id IN (SELECT c.id FROM conversations AS c JOIN users AS u"
                    " ON u.id = c.user_id WHERE lower(u.display_name) LIKE ? OR u.phone LIKE ?)"
                    " ORDER BY started_at DESC, id DESC LIMIT 50",
                    [*search, *search],
                )
            ],
        ),
        "conversations/{id}": (
            "the conversation's messages",
            [
                (
                    "SELECT created_at, direction, author, text, meta FROM messages"
                    " WHERE conversation_id = ? ORDER BY id",
                    [TRANSCRIPT_ID],
                )
            ],
        ),
        "leads.csv": (
            "the period's leads with their channel",
            [
                (
                    "SELECT l.id, l.created_at, c.channel, l.conversation_id, l.product, l.amount,"
                    " l.tenure_months, l.emi, l.monthly_income, l.eligible, l.name, l.phone,"
                    " l.consent, l.status FROM leads AS l"
                    " LEFT JOIN conversations AS c ON c.id = l.conversation_id"
                    " WHERE l.created_at >= ? AND l.created_at < ? ORDER BY l.created_at, l.id",
                    span,
                )
            ],
        ),
        "funnel (telegram)": ("the same, on one channel", [quotes("telegram")]),
    }


def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1``, ``$2``, ..."""
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]


def sqlite_floors(
    path: Path, statements: dict[str, tuple[str, list[SQL]]]
) -> tuple[dict[str, Callable[[], Awaitable[Any]]], Callable[[], None]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA mmap_size=268435456")
    conn.execute("PRAGMA cache_size=-32000")

    def run(batch: list[SQL]) -> None:
        for sql, params in batch:
            conn.execute(sql, params).fetchall()

    def case(batch: list[SQL]) -> Callable[[], Awaitable[Any]]:
        return lambda: asyncio.to_thread(run, batch)

    return {name: case(batch) for name, (_, batch) in statements.items()}, conn.close


async def postgres_floors(
    dsn: str, statements: dict[str, tuple[str, list[SQL]]]
) -> tuple[dict[str, Callable[[], Awaitable[Any]]], asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    await conn.execute("SET jit = off")

    def case(batch: list[SQL]) -> Callable[[], Awaitable[Any]]:
        async def run() -> None:
            for sql, params in batch:
                await conn.fetch(_numbered(sql), *params)

        return run

    return {name: case(batch) for name, (_, batch) in statements.items()}, conn


def _cases(dashboard: Dashboard, period: Period) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "funnel": lambda: dashboard.funnel(period),
        "daily": lambda: dashboard.daily(period),
        "handoffs": lambda: dashboard.handoffs(period),
        "llm": lambda: dashboard.llm(period),
        "gaps": lambda: dashboard.gaps(period),
        "conversations?q=": lambda: dashboard.search(SEARCH_TEXT),
        "conversations/{id}": lambda: dashboard.transcript(TRANSCRIPT_ID),
        "leads.csv": lambda: dashboard.leads(period),
        "funnel (telegram)": lambda: dashboard.funnel(Period(period.start, period.end, "telegram")),
    }


Figures = dict[str, tuple[float, float]]


def _p50_p95(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[
        min(len(samples) - 1, round(0.95 * (len(samples) - 1)))
    ]


async def _timed(case: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await case()
    return (time.perf_counter() - started) * 1000


async def time_endpoints(
    dashboard: Dashboard,
    period: Period,
    floors: dict[str, Callable[[], Awaitable[Any]]],
    runs: int,
) -> tuple[Figures, Figures]:
    """Each endpoint and its floor: one warm-up each, then ``runs`` runs, alternating."""
    figures: Figures = {}
    floor_figures: Figures = {}
    for name, case in _cases(dashboard, period).items():
        floor = floors[name]
        await case()  # warm-up
        await floor()
        samples: list[float] = []
        floor_samples: list[float] = []
        for _ in range(runs):
            samples.append(await _timed(case))
            floor_samples.append(await _timed(floor))
        figures[name] = _p50_p95(samples)
        floor_figures[name] = _p50_p95(floor_samples)
    return figures, floor_figures


def report(
    backend: str,
    seconds: float,
    figures: Figures,
    floors: Figures,
    statements: dict[str, tuple[str, list[SQL]]],
) -> bool:
    print(f"\n{backend}: seeded in {seconds:.1f} s")
    print(
        f"  {'endpoint':<20}{'p50 ms':>8}{'p95 ms':>8}{'floor p50':>11}{'floor p95':>11}"
        f"{'ratio p95':>11}  target < {TARGET_MS:.0f} ms p95"
    )
    ok = True
    for name, (p50, p95) in figures.items():
        passed = p95 < TARGET_MS
        ok &= passed
        floor_p50, floor_p95 = floors[name]
        print(
            f"  {name:<20}{p50:>8.1f}{p95:>8.1f}{floor_p50:>11.1f}{floor_p95:>11.1f}"
            f"{p95 / floor_p95:>10.1f}x  {'ok' if passed else 'SLOW'}"
        )
    print("  floors (plain SQL through the bare driver):")
    for name, (what, _) in statements.items():
        print(f"    {name}: {what}")
    return ok


async def run_sqlite(args: argparse.Namespace, seed: Seed) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        path = args.sqlite_file or Path(tmp) / "bench.db"
        fresh = not path.exists()
        db = create_database(f"sqlite+aiosqlite:///{path}")
        seconds = 0.0
        period = Period.days_back(args.window)
        statements = floor_statements(False, period)
        dashboard = Dashboard(db)
        try:
            if fresh:
                await upgrade_to_head(db)
                started = time.perf_counter()
                await asyncio.to_thread(seed_sqlite, path, seed)
                seconds = time.perf_counter() - started
            floors, close = sqlite_floors(path, statements)
            try:
                figures, floor_figures = await time_endpoints(dashboard, period, floors, args.runs)
            finally:
                close()
        finally:
            await dashboard.close()
            await db.dispose()
    return report("SQLite", seconds, figures, floor_figures, statements)


async def run_postgres(args: argparse.Namespace, seed: Seed) -> bool:
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
    dsn = f"{base}/{BENCH_DB}"
    db = create_database(dsn.replace("postgresql://", "postgresql+asyncpg://"))
    period = Period.days_back(args.window)
    statements = floor_statements(True, period)
    dashboard = Dashboard(db)
    try:
        await upgrade_to_head(db)
        started = time.perf_counter()
        await seed_postgres(dsn, seed)
        seconds = time.perf_counter() - started
        floors, conn = await postgres_floors(dsn, statements)
        try:
            figures, floor_figures = await time_endpoints(dashboard, period, floors, args.runs)
        finally:
            await conn.close()
    finally:
        await dashboard.close()
        await db.dispose()
        if not args.keep:
            admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            finally:
                await admin.close()
    return report("Postgres", seconds, figures, floor_figures, statements)


async def main(args: argparse.Namespace) -> int:
    seed = Seed(args.conversations, args.messages, args.leads, datetime.now(UTC))
    print(
        f"{args.conversations:,} conversations, {args.messages:,} messages, {args.leads:,} leads "
        f"over 365 days; a {args.window}-day window, {args.runs} runs each"
    )
    ok = True
    if args.only in (None, "sqlite"):
        ok &= await run_sqlite(args, seed)
    if args.only in (None, "postgres"):
        ok &= await run_postgres(args, seed)
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--window", type=int, default=30, help="days")
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    parser.add_argument("--keep", action="store_true", help="keep the Postgres database after")
    parser.add_argument(
        "--sqlite-file", type=Path, help="keep the SQLite database here (seeded if missing)"
    )
    args = parser.parse_args(argv)
    if args.leads > args.conversations:
        parser.error("--leads must not exceed --conversations")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

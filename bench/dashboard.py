"""The sales dashboard's aggregates on a year of data, on SQLite and on Postgres.

Seeds (bulk INSERTs on SQLite, COPY on Postgres, into a schema made by the migrations, indexes
included) 100,000 conversations over the last 365 days, 1,000,000 messages (about ten a
conversation, replies carrying the meta the pipeline stores: latency, LLM tokens, fallbacks,
breaker states, quotes, "I don't know" answers), 10,000 leads and a handoff for each lead, then
times each JSON endpoint's aggregate (``core.dashboard.Dashboard``, what the routes call) for a
30-day window ending today: p50 and p95 over --runs runs each (after one warm-up run).
Target: p95 under 300 ms for every endpoint on both databases.

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
from core.store.database import Database, create_database  # noqa: E402
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


def _cases(dashboard: Dashboard, period: Period) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "funnel": lambda: dashboard.funnel(period),
        "daily": lambda: dashboard.daily(period),
        "handoffs": lambda: dashboard.handoffs(period),
        "llm": lambda: dashboard.llm(period),
        "gaps": lambda: dashboard.gaps(period),
        "conversations?q=": lambda: dashboard.search("lead person 4242"),
        "conversations/{id}": lambda: dashboard.transcript(4242),
        "leads.csv": lambda: dashboard.leads(period),
        "funnel (telegram)": lambda: dashboard.funnel(Period(period.start, period.end, "telegram")),
    }


async def time_endpoints(db: Database, runs: int, window: int) -> dict[str, tuple[float, float]]:
    dashboard = Dashboard(db)
    period = Period.days_back(window)
    figures: dict[str, tuple[float, float]] = {}
    try:
        for name, case in _cases(dashboard, period).items():
            await case()  # warm-up
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                await case()
                samples.append((time.perf_counter() - started) * 1000)
            samples.sort()
            p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
            figures[name] = (statistics.median(samples), p95)
    finally:
        await dashboard.close()
    return figures


def report(backend: str, seconds: float, figures: dict[str, tuple[float, float]]) -> bool:
    print(f"\n{backend}: seeded in {seconds:.1f} s")
    print(f"  {'endpoint':<22}{'p50 ms':>10}{'p95 ms':>10}  target < {TARGET_MS:.0f} ms p95")
    ok = True
    for name, (p50, p95) in figures.items():
        passed = p95 < TARGET_MS
        ok &= passed
        print(f"  {name:<22}{p50:>10.1f}{p95:>10.1f}  {'ok' if passed else 'SLOW'}")
    return ok


async def run_sqlite(args: argparse.Namespace, seed: Seed) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        path = args.sqlite_file or Path(tmp) / "bench.db"
        fresh = not path.exists()
        db = create_database(f"sqlite+aiosqlite:///{path}")
        seconds = 0.0
        try:
            if fresh:
                await upgrade_to_head(db)
                started = time.perf_counter()
                await asyncio.to_thread(seed_sqlite, path, seed)
                seconds = time.perf_counter() - started
            figures = await time_endpoints(db, args.runs, args.window)
        finally:
            await db.dispose()
    return report("SQLite", seconds, figures)


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
    try:
        await upgrade_to_head(db)
        started = time.perf_counter()
        await seed_postgres(dsn, seed)
        seconds = time.perf_counter() - started
        figures = await time_endpoints(db, args.runs, args.window)
    finally:
        await db.dispose()
        if not args.keep:
            admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            finally:
                await admin.close()
    return report("Postgres", seconds, figures)


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

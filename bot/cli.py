"""The ``esoteric`` command line (also ``python -m bot``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from bot.runtime import open_runtime
from bot.settings import Settings, load_settings
from core.errors import ConfigError, EsotericError

EXIT_CONFIG = 2
# Bad arguments (argparse's own code for a usage error).
EXIT_USAGE = 2

log = logging.getLogger("esoteric")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esoteric", description="Esoteric loan-sales assistant")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("chat", help="talk to the bot in this terminal (or pipe lines into it)")
    sub.add_parser("serve", help="run every configured channel until SIGINT/SIGTERM")
    sub.add_parser("worker", help="turn workers only, no HTTP (Postgres deployments)")
    sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    sessions = sub.add_parser("sessions", help="conversation sessions")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")
    sessions_sub.add_parser("cleanup", help="close idle sessions once")
    kb = sub.add_parser("kb", help="the knowledge base")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True, metavar="ACTION")
    ingest = kb_sub.add_parser(
        "ingest", help="ingest markdown, text, HTML and PDF files or folders"
    )
    ingest.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    ingest.add_argument("--bundled", action="store_true", help="also (re)ingest the bundled docs")
    query = kb_sub.add_parser("query", help="show the chunks that best match a question")
    query.add_argument("text", nargs="+", metavar="TEXT")
    query.add_argument("-k", type=int, default=5, help="how many results (default 5)")
    query.add_argument(
        "--json", action="store_true", help="every hit whole (text, score, source, heading)"
    )
    kb_sub.add_parser("stats", help="chunks per source")
    quote = sub.add_parser(
        "quote",
        help="write a loan quote (Key Facts Statement) as a PDF; needs no database or network",
        description="Write a loan quote as a PDF. AMOUNT like 2500000, 25L or '25 lakh'; RATE "
        "in percent a year (8.5); TENURE in months or years (240, 20y, '20 years').",
    )
    quote.add_argument("amount", metavar="AMOUNT", help="the loan amount: 2500000, 25L, '25 lakh'")
    quote.add_argument("rate", metavar="RATE", help="the interest rate in percent a year: 8.5")
    quote.add_argument("tenure", metavar="TENURE", help="months or years: 240, 20y, '20 years'")
    quote.add_argument("--product", default="home", help="the catalogue's product id (home)")
    quote.add_argument(
        "--date", metavar="YYYY-MM-DD", help="the date printed on the quote (default today, UTC)"
    )
    quote.add_argument("--out", type=Path, required=True, metavar="FILE", help="the PDF to write")
    report = sub.add_parser("report", help="the sales funnel of the last days, in this terminal")
    report.add_argument(
        "--days", type=_days, default=7, metavar="N", help="today and the N-1 days before (7)"
    )
    report.add_argument("--channel", help="one channel only (telegram, slack, web...)")
    return parser


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days") from None
    if not 1 <= days <= 366:
        raise argparse.ArgumentTypeError("between 1 and 366 days")
    return days


def _report_runner(args: argparse.Namespace) -> Callable[[Settings], Coroutine[Any, Any, int]]:
    async def report(settings: Settings) -> int:
        from core.dashboard import Dashboard, Period, funnel_table
        from core.store.database import create_database
        from core.store.schema import upgrade_to_head

        db = create_database(settings.resolved_database_url)
        dashboard = Dashboard(db, settings.llm_price_per_million_tokens)
        try:
            await upgrade_to_head(db)
            period = Period.days_back(args.days, args.channel)
            print(funnel_table(period, await dashboard.funnel(period)))
        finally:
            await dashboard.close()
            await db.dispose()
        return 0

    return report


class _BadQuoteInput(Exception):
    """An argument of ``esoteric quote`` that cannot be read."""


def _quote_inputs(args: argparse.Namespace) -> tuple[Any, Any, int, Any]:
    """(amount, rate, tenure in months, date) from the command line, or ``_BadQuoteInput``."""
    from datetime import date
    from decimal import Decimal, InvalidOperation

    from core.messages import utcnow
    from core.numbers import parse_amount, parse_tenure_months

    amount = parse_amount(args.amount)
    if amount is None:
        raise _BadQuoteInput(
            f"cannot read the amount {args.amount!r} (try 2500000, 25L, '25 lakh')"
        )
    try:
        rate = Decimal(args.rate.strip().removesuffix("%").strip())
    except InvalidOperation:
        rate = None
    if rate is None or not rate.is_finite():
        raise _BadQuoteInput(f"cannot read the rate {args.rate!r} (percent a year, like 8.5)")
    tenure = parse_tenure_months(args.tenure)
    if tenure is None:
        raise _BadQuoteInput(f"cannot read the tenure {args.tenure!r} (try 240, 20y, '20 years')")
    if args.date is None:
        when = utcnow().date()
    else:
        try:
            when = date.fromisoformat(args.date)
        except ValueError:
            raise _BadQuoteInput(f"cannot read the date {args.date!r} (YYYY-MM-DD)") from None
    return amount, rate, tenure, when


def _printable(text: str) -> str:
    """``text`` as this terminal can print it (a bare C locale has no rupee sign)."""
    encoding = sys.stdout.encoding or "ascii"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.replace("₹", "Rs ").encode(encoding, errors="replace").decode(encoding)
    return text


def _quote(args: argparse.Namespace) -> int:
    """``esoteric quote``: the quote from the bundled catalogue alone, written as a PDF."""
    import io

    from pypdf import PdfReader

    from core.catalogue import load_catalogue
    from core.errors import InputError
    from core.money import format_money
    from core.quote import build_quote
    from core.quote_pdf import render_quote_pdf

    try:
        amount, rate, tenure, when = _quote_inputs(args)
        catalogue = load_catalogue()
        quote = build_quote(
            catalogue, args.product, amount, tenure, quote_date=when, annual_rate=rate
        )
    except (_BadQuoteInput, InputError) as exc:
        print(f"esoteric quote: {exc}", file=sys.stderr)
        return EXIT_USAGE
    data = render_quote_pdf(quote)
    try:
        args.out.write_bytes(data)
    except OSError as exc:
        print(f"esoteric quote: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    pages = len(PdfReader(io.BytesIO(data)).pages)
    emi = format_money(quote.emi, quote.currency, paise=True)
    summary = (
        f"{quote.reference}: EMI {emi} a month for {quote.tenure_months} months, "
        f"APR {quote.apr}%, {pages} page{'s' if pages != 1 else ''} -> {args.out}"
    )
    print(_printable(summary))
    return 0


def _kb_runner(args: argparse.Namespace) -> Callable[[Settings], Coroutine[Any, Any, int]]:
    from bot import kb

    if args.kb_command == "ingest":
        return lambda settings: kb.ingest_command(settings, args.paths, args.bundled)
    if args.kb_command == "query":
        return lambda settings: kb.query_command(
            settings, " ".join(args.text), max(1, args.k), args.json
        )
    return kb.stats_command


def _configure_logging(settings: Settings, quiet: bool) -> None:
    # Structured (JSON with ESOTERIC_LOG_FORMAT=json), ids attached, secrets redacted.
    from bot.logging import configure_logging

    configure_logging(settings, quiet=quiet)


async def _chat(settings: Settings) -> int:
    from adapters.console.channel import ConsoleChannel

    async with open_runtime(settings) as runtime:
        console = ConsoleChannel(runtime.service)
        runtime.service.register_channel(console.name, console)
        await runtime.service.recover(startup=True, wait=True)
        await console.run()
    return 0


async def _migrate(settings: Settings) -> int:
    from core.store.database import create_database
    from core.store.schema import current_revision, upgrade_to_head

    db = create_database(settings.resolved_database_url)
    try:
        await upgrade_to_head(db)
        print(
            f"database {settings.safe_database_url()} is at revision {await current_revision(db)}"
        )
    finally:
        await db.dispose()
    return 0


async def _cleanup(settings: Settings) -> int:
    async with open_runtime(settings, scheduler=False) as runtime:
        closed = await runtime.cleanup_sessions()
    print(f"closed {closed} idle session(s)")
    return 0


async def _serve(settings: Settings) -> int:
    from bot.server import serve

    await serve(settings)
    return 0


async def _worker(settings: Settings) -> int:
    from bot.server import work

    await work(settings)
    return 0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it exists (not on Windows): every turn is a few dozen event-loop callbacks,
    socket reads and thread hand-offs, and uvloop does them at a fraction of asyncio's cost."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    from bot.imports import leave_out_unused_imports

    leave_out_unused_imports()
    args = _parser().parse_args(argv)
    if args.command == "quote":
        # Only the bundled catalogue: no settings, database, knowledge base or network.
        try:
            return _quote(args)
        except EsotericError as exc:
            print(f"esoteric: {exc}", file=sys.stderr)
            return 1
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"esoteric: invalid setting {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(
        settings, quiet=args.command in ("chat", "migrate", "sessions", "kb", "report")
    )
    commands: dict[str, Callable[[Settings], Coroutine[Any, Any, int]]] = {
        "chat": _chat,
        "serve": _serve,
        "worker": _worker,
        "migrate": _migrate,
    }
    if args.command in ("serve", "worker"):
        from bot.kb import limit_malloc_arenas

        limit_malloc_arenas()
    if args.command == "kb":
        runner = _kb_runner(args)
    elif args.command == "report":
        runner = _report_runner(args)
    else:
        runner = _cleanup if args.command == "sessions" else commands[args.command]
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as loop_runner:
            return loop_runner.run(runner(settings))
    except ConfigError as exc:
        print(f"esoteric: invalid setting {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except EsotericError as exc:
        print(f"esoteric: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> None:
    sys.exit(main())

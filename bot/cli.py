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
    return parser


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
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"esoteric: invalid setting {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings, quiet=args.command in ("chat", "migrate", "sessions", "kb"))
    commands: dict[str, Callable[[Settings], Coroutine[Any, Any, int]]] = {
        "chat": _chat,
        "serve": _serve,
        "worker": _worker,
        "migrate": _migrate,
    }
    if args.command == "kb":
        runner = _kb_runner(args)
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

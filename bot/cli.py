"""The ``esoteric`` command line (also ``python -m bot``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
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
    sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    sessions = sub.add_parser("sessions", help="conversation sessions")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")
    sessions_sub.add_parser("cleanup", help="close idle sessions once")
    return parser


def _configure_logging(settings: Settings, quiet: bool) -> None:
    level = logging.WARNING if quiet else getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Third-party chatter stays quiet unless something is wrong.
    for noisy in ("apscheduler", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _chat(settings: Settings) -> int:
    from adapters.console.channel import ConsoleChannel

    async with open_runtime(settings) as runtime:
        console = ConsoleChannel(runtime.service)
        await runtime.service.recover(["console"])
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"esoteric: invalid setting {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings, quiet=args.command in ("chat", "migrate", "sessions"))
    commands: dict[str, Callable[[Settings], Coroutine[Any, Any, int]]] = {
        "chat": _chat,
        "serve": _serve,
        "migrate": _migrate,
    }
    runner = _cleanup if args.command == "sessions" else commands[args.command]
    try:
        return asyncio.run(runner(settings))
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

"""``esoteric serve``: the HTTP server and every configured channel, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

import uvicorn

from adapters.base import ChannelAdapter
from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import open_runtime
from bot.settings import Settings
from core.errors import ConfigError

log = logging.getLogger(__name__)


class HttpServer(uvicorn.Server):
    # This process's event loop owns SIGINT/SIGTERM; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def settle_garbage_collector() -> None:
    """Tune the cyclic garbage collector for a long-running server, once it has started.

    Startup leaves a few hundred thousand long-lived objects (modules, ORM metadata, the catalogue,
    FastAPI's routes); every full collection walked them all, and with CPython's default young-
    generation threshold (700 allocations) a turn triggered several collections, which showed as
    the slowest 1% of API requests taking twice as long. Freezing moves what exists now out of
    the collector's sight; the larger threshold collects young objects every 10,000 allocations
    instead, which still bounds the garbage cycles can hold to a few megabytes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def work(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """``esoteric worker``: turn workers only (Postgres). Channels are built to send, not to
    receive; no HTTP server. Runs until SIGINT/SIGTERM, then lets running turns finish."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings, knowledge_in_background=True) as runtime:
        if not runtime.db.is_postgres:
            raise ConfigError(
                "DATABASE_URL",
                "esoteric worker needs Postgres (the embedded SQLite default runs its turns in "
                "esoteric serve)",
            )
        channels = build_channels(runtime, receive=False)
        started: list[ChannelAdapter] = []
        try:
            for channel in channels:
                await channel.start()
                started.append(channel)
            await runtime.service.start()
            settle_garbage_collector()
            log.info(
                "esoteric worker is running %d turn(s) at a time; database %s; sends on: %s",
                settings.worker_concurrency,
                settings.safe_database_url(),
                ", ".join(c.name for c in channels) or "none",
            )
            await stop.wait()
            log.info("shutting down")
        finally:
            # Turns in flight finish first (the runtime closes the service), then channels.
            await runtime.service.aclose()
            for channel in reversed(started):
                await channel.stop()


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The knowledge base opens (and a fresh store ingests) while the server already answers.
    async with open_runtime(settings, knowledge_in_background=True) as runtime:
        channels = build_channels(runtime)
        app = create_app(runtime, channels)
        server = HttpServer(
            uvicorn.Config(
                app,
                host=settings.http_host,
                port=settings.http_port,
                log_level="warning",
                lifespan="off",
                # Requests still running when the channels have stopped get this long to finish.
                timeout_graceful_shutdown=30,
                # Frames a little over the limit get a clear error frame from the web channel;
                # far larger ones are cut off here, before they are buffered.
                ws_max_size=settings.max_body_bytes * 4,
                server_header=False,
                # uvicorn's records go through Esoteric's handler (JSON, ids, redaction).
                log_config=None,
            )
        )
        serving = asyncio.create_task(server.serve(), name="http")
        started: list[ChannelAdapter] = []
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            for channel in channels:
                await channel.start()
                started.append(channel)
            # Whatever a crash left: queued again (safe beside other processes' running turns).
            await runtime.service.recover(startup=True)
            settle_garbage_collector()
            log.info(
                "esoteric is running on http://%s:%d; database %s; channels: %s",
                settings.http_host,
                settings.http_port,
                settings.safe_database_url(),
                ", ".join(c.name for c in channels) or "none",
            )
            await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
            log.info("shutting down")
        finally:
            stopping.cancel()
            # Channels first so no new turns start; the runtime then waits for turns in flight.
            for channel in reversed(started):
                await channel.stop()
            server.should_exit = True
            await serving

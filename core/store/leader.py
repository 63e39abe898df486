"""Leadership for work only one process may do at a time while it runs (Telegram long polling:
two processes polling one bot would take each other's updates).

On Postgres, the leader holds a session advisory lock on a connection of its own: if the
process dies, its connection closes and the lock goes with it, so another process takes over
within ``retry_every`` seconds. The embedded SQLite default runs one process, which leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class LeaderLock:
    def __init__(self, dsn: str | None, name: str, retry_every: float = 5.0) -> None:
        """``dsn``: a libpq URL of the Postgres database; ``None``: this process leads."""
        self.dsn = dsn
        self.name = name
        self.retry_every = retry_every
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self.leading = False

    async def run(
        self, lead: Callable[[], Awaitable[None]], follow: Callable[[], Awaitable[None]]
    ) -> None:
        """Keep trying to lead: ``lead()`` when this process becomes the leader, ``follow()``
        when it loses the lock (its connection dropped). Runs until cancelled."""
        if self.dsn is None:
            self.leading = True
            await lead()
            await asyncio.Event().wait()
        while True:
            lost = await self._acquire()
            if lost is None:
                await asyncio.sleep(self.retry_every)
                continue
            self.leading = True
            log.info("leading %s", self.name)
            try:
                await lead()
                await lost.wait()
                log.warning("lost the lead of %s (database connection closed)", self.name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not lead %s; trying again", self.name)
            finally:
                self.leading = False
                await follow()
                await self._close()
            await asyncio.sleep(self.retry_every)

    async def _acquire(self) -> asyncio.Event | None:
        import asyncpg

        try:
            connection = await asyncpg.connect(self.dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("could not reach the database to lead %s: %s", self.name, exc)
            return None
        got = await connection.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1))", f"esoteric-leader:{self.name}"
        )
        if not got:
            await connection.close()
            return None
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        self._connection = connection
        return lost

    async def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=2)
            self._connection = None

    def start(
        self, lead: Callable[[], Awaitable[None]], follow: Callable[[], Awaitable[None]]
    ) -> None:
        self._task = asyncio.create_task(self.run(lead, follow), name=f"leader:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._close()
        self.leading = False

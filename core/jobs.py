"""Scheduled jobs. Each is idempotent SQL so that two processes may run it at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from core.messages import utcnow
from core.store import repository as repo
from core.store.database import Database

log = logging.getLogger(__name__)


async def close_idle_sessions(
    db: Database, idle_minutes: int, clock: Callable[[], datetime] = utcnow
) -> int:
    """Close conversations with no activity for ``idle_minutes``; records why ("idle")."""
    now = clock()
    async with db.transaction() as session:
        closed = await repo.close_idle(session, now - timedelta(minutes=idle_minutes), now)
    if closed:
        log.info("closed %d idle conversation(s)", closed)
    return closed

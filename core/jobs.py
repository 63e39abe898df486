"""Scheduled jobs. Each is idempotent SQL so that two processes may run it at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from core.messages import utcnow
from core.store import repository as repo
from core.store.database import Database

if TYPE_CHECKING:
    from core.handoff import HandoffService, TickReport

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


async def run_handoff_timers(handoffs: HandoffService) -> TickReport:
    """Reminders for unclaimed handoffs, idle handoffs back to the bot, cards not yet posted.
    The timers' state is in SQL, so this picks up where a previous process left off."""
    report = await handoffs.tick()
    if report.reminded or report.returned or report.cards_posted:
        log.info(
            "handoff timers: %d reminded, %d returned to the bot, %d cards posted",
            report.reminded,
            report.returned,
            report.cards_posted,
        )
    return report

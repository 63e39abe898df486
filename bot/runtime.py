"""The composition root: builds every part from settings and tears it down in reverse."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.settings import Settings
from core.agent.base import Agent
from core.agent.scripted import ScriptedAgent, ScriptedAgentConfig
from core.catalogue import Catalogue, load_catalogue
from core.conversation import ConversationService, ServiceConfig
from core.errors import ConfigError
from core.jobs import close_idle_sessions
from core.store.database import Database, create_database
from core.store.schema import is_at_head, upgrade_to_head

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    catalogue: Catalogue
    scripted: ScriptedAgent
    agent: Agent
    service: ConversationService
    scheduler: AsyncIOScheduler | None
    # The knowledge base, when one could be opened (None: running without retrieval).
    knowledge: Any | None = None

    async def cleanup_sessions(self) -> int:
        return await close_idle_sessions(self.db, self.settings.session_idle_minutes)


async def prepare_database(settings: Settings, db: Database) -> None:
    """The embedded default upgrades itself; a shared database must be migrated on purpose."""
    if settings.is_embedded_database:
        await upgrade_to_head(db)
    elif not await is_at_head(db):
        raise ConfigError(
            "DATABASE_URL",
            "the database schema is not at the latest revision; run `esoteric migrate` first",
        )


@asynccontextmanager
async def open_runtime(settings: Settings, *, scheduler: bool = True) -> AsyncIterator[Runtime]:
    async with AsyncExitStack() as stack:
        db = create_database(settings.resolved_database_url)
        stack.push_async_callback(db.dispose)
        await prepare_database(settings, db)

        catalogue = load_catalogue()
        scripted = ScriptedAgent(
            catalogue,
            ScriptedAgentConfig(
                currency=settings.currency, max_emi_to_income=settings.max_emi_to_income
            ),
        )
        agent: Agent = scripted
        service = ConversationService(
            db, agent, scripted, ServiceConfig(idle_minutes=settings.session_idle_minutes)
        )
        stack.push_async_callback(service.aclose)

        sched: AsyncIOScheduler | None = None
        runtime = Runtime(settings, db, catalogue, scripted, agent, service, None)
        if scheduler:
            sched = AsyncIOScheduler(timezone="UTC")
            sched.add_job(
                runtime.cleanup_sessions,
                "interval",
                minutes=settings.cleanup_interval_minutes,
                id="close-idle-sessions",
                max_instances=1,
                coalesce=True,
            )
            sched.start()
            stack.callback(sched.shutdown, wait=False)
            runtime.scheduler = sched
            # Sweep once now so a session idle since the last run is closed before input arrives.
            await runtime.cleanup_sessions()
        yield runtime

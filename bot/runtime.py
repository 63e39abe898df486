"""The composition root: builds every part from settings and tears it down in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.kb import knowledge_for_runtime, prepare_knowledge
from bot.settings import Settings
from core.admin import AdminConfig, AdminService, summary_of_ingest
from core.agent.base import Agent
from core.agent.breaker import BreakerConfig, CircuitBreaker
from core.agent.scripted import ScriptedAgent, ScriptedAgentConfig
from core.catalogue import Catalogue, load_catalogue
from core.conversation import ConversationService, ServiceConfig
from core.engine import LocalTurnQueue, ProcrastinateTurnQueue, TurnQueue, dsn_of
from core.errors import ConfigError
from core.handlers import (
    AdminCommands,
    AgentAnswer,
    BannedSender,
    BroadcastOptIn,
    Counters,
    CustomerCommands,
    FloodGuard,
    Handler,
    HumanHandoff,
    InputGuards,
    Paused,
    VoiceNotes,
)
from core.handoff import HandoffConfig, HandoffService, TickReport
from core.jobs import close_idle_sessions, run_handoff_timers
from core.knowledge.answer import knowledge_lookup
from core.knowledge.gate import KnowledgeGate
from core.knowledge.query import QueryExpander
from core.knowledge.types import KnowledgeSearch
from core.outbox import Outbox
from core.ratelimit import RateLimits
from core.store.database import Database, create_database
from core.store.schema import is_at_head, upgrade_to_head_apart
from core.store.turns import TurnStore
from core.voice import GroqTranscriber, Transcriber
from core.waiters import TurnWaiters

if TYPE_CHECKING:
    from core.agent.llm import LLMAgent

log = logging.getLogger(__name__)

# How often every process looks for work a crash or a lost job left behind.
RECOVERY_SWEEP_SECONDS = 30


@dataclass
class Runtime:
    settings: Settings
    db: Database
    catalogue: Catalogue
    scripted: ScriptedAgent
    agent: Agent
    service: ConversationService
    scheduler: AsyncIOScheduler | None
    # The knowledge base, when one could be opened (None: running without retrieval); a
    # ``KnowledgeGate`` when it is prepared in the background.
    knowledge: Any | None = None
    # Why there is no knowledge base, for /ready and the operator.
    knowledge_problem: str | None = None
    # The human handoff to the sales desk, and the admin commands (None: built by hand).
    handoffs: HandoffService | None = None
    admin: AdminService | None = None
    # libpq URL of the Postgres database (None on SQLite): the job queue, waiters, leader.
    postgres_dsn: str | None = None
    # Where parts built later (the channels' shared state) register their teardown.
    stack: AsyncExitStack | None = None
    # Voice notes' speech to text (None without GROQ_API_KEY): the turn's VoiceNotes handler
    # uses it, and channels that hear reps' voice messages too.
    transcriber: Transcriber | None = None
    # The per-minute counters (flood control; Redis when set), for parts built later to share.
    limits: RateLimits | None = None

    def shared_limits(self) -> RateLimits:
        """The runtime's rate-limit counters, made here for a runtime built by hand."""
        if self.limits is None:
            self.limits = RateLimits(self.settings.redis_url)
            self.close_later(self.limits.aclose)
        return self.limits

    def close_later(self, close: Callable[[], Awaitable[None]]) -> None:
        """Tear ``close`` down with the runtime (after the channels have stopped)."""
        if self.stack is not None:
            self.stack.push_async_callback(close)

    async def cleanup_sessions(self) -> int:
        # Every process schedules it; one runs it at a time (the UPDATE is idempotent anyway).
        async with self.db.singleton("close-idle-sessions") as mine:
            if not mine:
                return 0
            return await close_idle_sessions(self.db, self.settings.session_idle_minutes)

    async def handoff_timers(self) -> TickReport | None:
        if self.handoffs is None:
            return None
        # One process at a time, so a reminder is sent once however many workers run.
        async with self.db.singleton("handoff-timers") as mine:
            return await run_handoff_timers(self.handoffs) if mine else None

    async def recovery_sweep(self) -> int:
        async with self.db.singleton("recovery-sweep") as mine:
            return await self.service.recover() if mine else 0


def build_handoff_and_admin(
    settings: Settings,
    db: Database,
    outbox: Outbox,
    counters: Counters,
    catalogue: Catalogue,
    knowledge: Any | None,
    stack: AsyncExitStack,
) -> tuple[HandoffService, AdminService]:
    """The handoff to the sales desk (its desk is attached when the Slack channel is built) and
    the admin commands. Both reach customers through the outbox."""
    handoffs = HandoffService(
        db,
        outbox,
        catalogue,
        HandoffConfig(
            sla_minutes=settings.handoff_sla_minutes,
            idle_minutes=settings.handoff_idle_minutes,
            hours=settings.hours(),
            currency=settings.currency,
            default_language=settings.default_language,
        ),
    )

    async def reload_knowledge() -> str:
        from core.knowledge.ingest import sync_bundled

        kb = knowledge
        if isinstance(knowledge, KnowledgeGate):
            if knowledge.state != "ready":
                return f"The knowledge base is not ready yet ({knowledge.describe()})."
            kb = knowledge.kb
        assert kb is not None
        report = await sync_bundled(kb)
        if report is None:
            return "The knowledge base is up to date: the bundled documents have not changed."
        return summary_of_ingest(report.added, report.unchanged, report.removed)

    admin = AdminService(
        db,
        outbox,
        counters,
        AdminConfig(
            admins=frozenset(settings.admins),
            idle_minutes=settings.session_idle_minutes,
            broadcast_per_second=settings.broadcast_per_second,
            default_language=settings.default_language,
        ),
        reload_knowledge=reload_knowledge if knowledge is not None else None,
    )
    stack.push_async_callback(admin.aclose)
    return handoffs, admin


def groq_client(settings: Settings, stack: AsyncExitStack) -> Any:
    """The groq SDK's client on its aiohttp transport, closed with the runtime. The SDK's own
    retries are off: its callers retry within their deadlines, which the SDK's retry-after
    waits ignore. Imported here: the SDK and its transports take a tenth of a second and 18 MiB,
    which the scripted agent alone does not need."""
    import httpx
    from groq import AsyncGroq

    from core.agent.groq_http import GroqHttpClient

    assert settings.groq_api_key is not None
    timeout = settings.llm_request_timeout_seconds
    client = AsyncGroq(
        api_key=settings.groq_api_key.get_secret_value(),
        base_url=settings.groq_base_url,
        max_retries=0,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        http_client=GroqHttpClient(),
    )
    stack.push_async_callback(client.close)
    return client


def build_transcriber(settings: Settings, stack: AsyncExitStack) -> Transcriber | None:
    """Groq's Whisper through the groq SDK, when there is a key; retried within the turn's
    deadline by ``GroqTranscriber`` itself."""
    if settings.groq_api_key is None:
        return None
    client = groq_client(settings, stack)
    return GroqTranscriber(
        client,
        settings.stt_model,
        max_retries=settings.llm_max_retries,
        backoff_seconds=settings.llm_retry_backoff_seconds,
    )


def build_handlers(
    settings: Settings,
    db: Database,
    transcriber: Transcriber | None,
    agent: Agent,
    scripted: ScriptedAgent,
    counters: Counters,
    admin: AdminService,
    handoffs: HandoffService,
    config: ServiceConfig,
    limits: RateLimits,
) -> list[Handler]:
    """The turn's handler chain, in the order its rules need (see ``core.handlers``)."""
    return [
        BannedSender(),
        FloodGuard(limits, settings.flood_messages_per_minute, settings.default_language),
        AdminCommands(admin, settings.default_language),
        Paused(),
        VoiceNotes(
            db,
            transcriber,
            max_seconds=settings.voice_max_seconds,
            keep_audio=settings.keep_audio,
            deadline_seconds=settings.llm_turn_deadline_seconds,
            default_language=settings.default_language,
        ),
        HumanHandoff(handoffs),
        BroadcastOptIn(db, settings.default_language),
        InputGuards(config.max_text_chars, settings.default_language),
        CustomerCommands(scripted),
        AgentAnswer(
            agent, scripted, counters, config.personas, daily_tokens=settings.llm_daily_tokens
        ),
    ]


def build_queue(settings: Settings, dsn: str | None, *, run_jobs: bool = True) -> TurnQueue:
    """Postgres: turns are jobs of procrastinate's queue, shared by every process. SQLite: one
    process, a queue in memory."""
    if dsn is None:
        return LocalTurnQueue(settings.worker_concurrency)
    return ProcrastinateTurnQueue(dsn, settings.worker_concurrency, run_jobs=run_jobs)


async def prepare_database(settings: Settings, db: Database) -> None:
    """The embedded default upgrades itself (in a child process: see ``upgrade_to_head_apart``);
    a shared database must be migrated on purpose."""
    if settings.is_embedded_database:
        await upgrade_to_head_apart(db)
    elif not await is_at_head(db):
        raise ConfigError(
            "DATABASE_URL",
            "the database schema is not at the latest revision; run `esoteric migrate` first",
        )


def build_llm_agent(
    settings: Settings,
    stack: AsyncExitStack,
    catalogue: Catalogue,
    scripted: ScriptedAgent,
    knowledge: KnowledgeSearch | None,
) -> LLMAgent:
    """The Groq agent, with the scripted agent as its fallback; it retries within the turn
    deadline. The SDK's aiohttp transport (its ``aiohttp`` extra) costs about a sixth less CPU
    per request than its default httpx one, and a tool turn makes two requests."""
    from core.agent.llm import LLMAgent, LLMConfig

    client = groq_client(settings, stack)
    return LLMAgent(
        client,
        LLMConfig(
            model=settings.llm_model,
            turn_deadline_seconds=settings.llm_turn_deadline_seconds,
            fallback_reserve_seconds=min(1.0, settings.llm_turn_deadline_seconds / 4),
            max_retries=settings.llm_max_retries,
            retry_backoff_seconds=settings.llm_retry_backoff_seconds,
            max_tool_rounds=settings.llm_max_tool_rounds,
            history_tokens=settings.llm_history_tokens,
            currency=settings.currency,
            max_emi_to_income=settings.max_emi_to_income,
        ),
        catalogue,
        scripted,
        knowledge,
        expand=QueryExpander.for_catalogue(catalogue).expand,
        breaker=CircuitBreaker(
            BreakerConfig(settings.llm_breaker_failures, settings.llm_breaker_cooldown_seconds)
        ),
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    scheduler: bool = True,
    run_turns: bool = True,
    knowledge_in_background: bool = False,
) -> AsyncIterator[Runtime]:
    """Everything but the channels. ``run_turns=False``: this process stores messages and
    queues turns, but runs none (Postgres only; other processes' workers run them).
    ``knowledge_in_background``: the knowledge base opens and ingests while turns are already
    answered (without retrieval until it is ready); otherwise it is ready before this yields."""
    async with AsyncExitStack() as stack:
        db = create_database(
            settings.resolved_database_url,
            # Turns hold connections only briefly; a few spare serve ingest and the API.
            pool_size=min(20, max(5, settings.worker_concurrency // 2 + 4)),
        )
        stack.push_async_callback(db.dispose)
        if db.is_sqlite:
            checkpoints = asyncio.create_task(db.keep_checkpointing(), name="sqlite-checkpoints")
            stack.push_async_callback(_cancel, checkpoints)
        await prepare_database(settings, db)

        catalogue = load_catalogue()
        knowledge: Any | None
        if knowledge_in_background:
            gate = KnowledgeGate()
            gate.start(lambda gate: prepare_knowledge(settings, gate))
            knowledge, knowledge_problem = gate, None
        else:
            knowledge, knowledge_problem = await knowledge_for_runtime(settings)
        if knowledge is not None:
            stack.push_async_callback(knowledge.close)
        scripted = ScriptedAgent(
            catalogue,
            ScriptedAgentConfig(
                currency=settings.currency,
                max_emi_to_income=settings.max_emi_to_income,
                default_language=settings.default_language,
            ),
            knowledge=(
                knowledge_lookup(
                    knowledge,
                    settings.knowledge_top_k,
                    QueryExpander.for_catalogue(catalogue).expand,
                )
                if knowledge
                else None
            ),
        )
        agent: Agent = scripted
        if settings.groq_api_key is not None:
            agent = build_llm_agent(settings, stack, catalogue, scripted, knowledge=knowledge)
        dsn = dsn_of(settings.resolved_database_url) if db.is_postgres else None
        config = ServiceConfig(
            idle_minutes=settings.session_idle_minutes,
            concurrency=settings.worker_concurrency,
            merge_messages=settings.merge_messages,
            max_edits=settings.max_edits,
        )
        queue = build_queue(settings, dsn, run_jobs=run_turns)
        outbox = Outbox(TurnStore(db), queue)
        counters = Counters()
        # Per-sender flood control counts across processes when Redis is set.
        limits = RateLimits(settings.redis_url)
        stack.push_async_callback(limits.aclose)
        handoffs, admin = build_handoff_and_admin(
            settings, db, outbox, counters, catalogue, knowledge, stack
        )
        transcriber = build_transcriber(settings, stack)
        service = ConversationService(
            db,
            agent,
            scripted,
            config,
            queue=queue,
            outbox=outbox,
            handlers=build_handlers(
                settings,
                db,
                transcriber,
                agent,
                scripted,
                counters,
                admin,
                handoffs,
                config,
                limits,
            ),
            waiters=TurnWaiters(outbox.store, listen_dsn=dsn),
            counters=counters,
            handoff=handoffs,
        )
        stack.push_async_callback(service.aclose)

        sched: AsyncIOScheduler | None = None
        runtime = Runtime(settings, db, catalogue, scripted, agent, service, None)
        runtime.knowledge, runtime.knowledge_problem = knowledge, knowledge_problem
        runtime.handoffs, runtime.admin, runtime.postgres_dsn = handoffs, admin, dsn
        runtime.stack, runtime.transcriber, runtime.limits = stack, transcriber, limits
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
            sched.add_job(
                runtime.handoff_timers,
                "interval",
                seconds=settings.handoff_check_seconds,
                id="handoff-timers",
                max_instances=1,
                coalesce=True,
            )
            sched.add_job(
                runtime.recovery_sweep,
                "interval",
                seconds=RECOVERY_SWEEP_SECONDS,
                id="recovery-sweep",
                max_instances=1,
                coalesce=True,
            )
            sched.start()
            stack.callback(sched.shutdown, wait=False)
            runtime.scheduler = sched
            # Sweep once now so a session idle since the last run is closed before input arrives.
            await runtime.cleanup_sessions()
        yield runtime

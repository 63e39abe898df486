"""The turn engine's promises on SQLite and Postgres: a failing turn is retried then given up
(never blocking its chat), a rate-limited reply waits and nothing of its chat overtakes it, an
item a dead process was sending is never sent again, a reply whose messages were answered
meanwhile is never delivered, and turns in flight stay within the bound."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from core.agent.base import AgentResult
from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService, ServiceConfig
from core.engine import LocalTurnQueue, ProcrastinateTurnQueue, TurnJob, dsn_of
from core.errors import RetryLater, StoreUnavailable
from core.handlers import Decision, Turn
from core.messages import Reply, Target, utcnow
from core.store.database import Database, create_database
from core.store.turns import ChatAddress
from tests.support.builders import customer, service_for
from tests.support.recording import RecordingPort
from tests.support.waiting import wait_until


async def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


class Exploding:
    """A handler that fails the turn of any message containing "boom"."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, turn: Turn) -> Decision | None:
        if "boom" in turn.data.text:
            self.calls += 1
            raise RuntimeError("the knowledge base fell over")
        return None


def service_with(db: Database, *first: Any, **config: Any) -> ConversationService:
    scripted = ScriptedAgent(load_catalogue())
    service = ConversationService(db, scripted, scripted, ServiceConfig(**config))
    service.chain.handlers = (*first, *service.chain.handlers)
    return service


async def test_a_failing_turn_is_retried_then_given_up_without_blocking_its_chat(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.engine.backoff", lambda attempt: 0.05)
    exploding = Exploding()
    service = service_with(database, exploding, max_turn_attempts=3)
    port = RecordingPort()
    service.register_channel("test", port)
    first = await service.accept(customer("boom", event_id="e-boom"), expect=True)
    after = await service.handle(customer("I need a car loan", event_id="e-next"))
    assert first is not None and first.outcome is not None
    outcome = await first.outcome
    assert outcome.status == "failed" and outcome.reply is None
    assert exploding.calls == 3
    # The customer is told once, and the next message is answered after it.
    assert after is not None and after.reply is not None and "Car Loan" in after.reply.text
    assert len(port.texts) == 2
    assert port.texts[0].startswith("Sorry, something went wrong on my side")
    assert port.texts[1] == after.reply.text
    statuses = await rows(database, "SELECT status, attempts FROM messages WHERE direction='in'")
    assert [tuple(r) for r in statuses] == [("failed", 3), ("answered", 0)]
    await service.aclose()


async def test_a_rate_limited_reply_waits_and_nothing_of_its_chat_overtakes_it(
    database: Database,
) -> None:
    service = service_for(database)
    sent: list[str] = []
    limited = [1]

    class LimitedPort(RecordingPort):
        async def send(self, target: Target, reply: Reply) -> None:
            if limited[0]:
                limited[0] -= 1
                raise RetryLater("429 Too Many Requests", 0.4)
            sent.append(reply.text)

    service.register_channel("test", LimitedPort())
    await service.handle(customer("hi"))
    assert sent == []  # waiting out its retry-after
    await service.handle(customer("I need a car loan"))
    assert sent == []  # behind the first
    await wait_until(lambda: len(sent) == 2, what="both replies sent", limit=5)
    assert "Which loan" in sent[0] and "Car Loan" in sent[1]
    await service.idle()  # the second delivery's "sent" is written just after the send
    items = await rows(database, "SELECT status, attempts FROM outbox ORDER BY id")
    assert [tuple(r) for r in items] == [("sent", 2), ("sent", 1)]
    await service.aclose()


async def test_recovery_sends_what_was_persisted_and_never_what_a_dead_process_was_sending(
    database: Database,
) -> None:
    service = service_for(database)
    port = RecordingPort()
    service.register_channel("test", port)
    await service.handle(customer("hi"))
    await service.handle(customer("I need a car loan"))
    # As a crash leaves them: the first reply mid-send, the second persisted and not yet sent.
    async with database.engine.begin() as conn:
        ids = [r[0] for r in (await conn.execute(text("SELECT id FROM outbox ORDER BY id"))).all()]
        long_ago = utcnow() - timedelta(minutes=10)
        await conn.execute(
            text("UPDATE outbox SET status = 'sending', claimed_at = :t WHERE id = :i"),
            {"t": long_ago, "i": ids[0]},
        )
        await conn.execute(
            text("UPDATE outbox SET status = 'pending', created_at = :t WHERE id = :i"),
            {"t": long_ago, "i": ids[1]},
        )
    port.sent.clear()
    await service.recover()
    await service.idle()
    assert len(port.sent) == 1 and "Car Loan" in port.texts[0]
    items = await rows(database, "SELECT status FROM outbox ORDER BY id")
    assert [r.status for r in items] == ["unknown", "sent"]
    await service.aclose()


class AnsweredMeanwhile:
    """Marks the turn's messages answered behind its back, as a second run of the same turn
    (the split brain the chat's lock rules out) would."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, turn: Turn) -> Decision | None:
        async with self.db.engine.begin() as conn:
            await conn.execute(
                text("UPDATE messages SET status = 'answered' WHERE id = :m"),
                {"m": turn.data.message_id},
            )
        return Decision(AgentResult(Reply("an answer nobody must see"), turn.data.state))


async def test_a_reply_whose_message_was_answered_meanwhile_is_never_delivered(
    database: Database,
) -> None:
    service = service_with(database, AnsweredMeanwhile(database))
    port = RecordingPort()
    service.register_channel("test", port)
    accepted = await service.accept(customer("hi"))
    assert accepted is not None
    await service.idle()
    assert port.sent == []
    assert await rows(database, "SELECT id FROM messages WHERE direction = 'out'") == []
    await service.aclose()


async def test_turns_in_flight_stay_within_the_bound(database: Database) -> None:
    running = peak = 0
    # Each turn holds until three run at once, so a slow store on a busy machine cannot keep the
    # bound from being reached; a bound that admits fewer than three times out and fails below.
    full = asyncio.Event()

    class Slow:
        async def __call__(self, turn: Turn) -> Decision | None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if running >= 3:
                full.set()
            try:
                await asyncio.wait_for(full.wait(), timeout=5)
                await asyncio.sleep(0.02)
            finally:
                running -= 1
            return None

    service = service_with(database, Slow(), concurrency=3)
    service.register_channel("test", RecordingPort())
    await asyncio.gather(*(service.handle(customer("hi", chat=f"c{n}")) for n in range(12)))
    assert peak == 3
    await service.aclose()


async def test_the_local_queue_keeps_one_waiting_job_per_message() -> None:
    seen: list[int | None] = []
    gate = asyncio.Event()

    async def run(job: TurnJob) -> None:
        await gate.wait()
        seen.append(job.message_id)

    queue = LocalTurnQueue(2)
    await queue.start(run)
    chat = ChatAddress("test", "c1")
    for message_id in (1, 2, 2, 3, 3, 3):
        await queue.defer(TurnJob(chat, message_id))
    gate.set()
    await queue.idle()
    assert seen == [1, 2, 3]


@pytest.mark.postgres
async def test_a_stalled_job_of_a_dead_worker_goes_back_to_the_queue(postgres_url: str) -> None:
    from procrastinate import App, PsycopgConnector

    from core.store.schema import upgrade_to_head

    db = create_database(postgres_url)
    await upgrade_to_head(db)
    await db.dispose()
    dsn = dsn_of(postgres_url)
    # A worker that took a job and died: its heartbeat stops, its job stays "doing".
    dead = App(connector=PsycopgConnector(conninfo=dsn))
    async with dead.open_async():
        worker_id = await dead.job_manager.register_worker()
        await dead.connector.execute_query_async(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status, worker_id)"
            " VALUES ('default', 'esoteric.turn', 'chat:x', %(args)s::jsonb, 'doing', %(w)s)",
            args=json.dumps({"message_id": 7}),
            w=worker_id,
        )
        await dead.connector.execute_query_async(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 minute'"
        )
    ran: list[int | None] = []

    async def run(job: TurnJob) -> None:
        ran.append(job.message_id)

    queue = ProcrastinateTurnQueue(dsn, 2, heartbeat=0.2, stalled_after=1.0)
    await queue.start(run)
    try:
        await wait_until(lambda: ran == [7], what="the stalled job ran again", limit=15)
    finally:
        await queue.stop(5)


@pytest.mark.postgres
async def test_a_full_pool_is_a_clear_error(postgres_url: str) -> None:
    db = create_database(postgres_url, pool_size=1, pool_timeout=0.2)
    try:
        async with db.engine.connect() as held:
            await held.execute(text("SELECT 1"))  # checked out, and kept
            with pytest.raises(StoreUnavailable, match="no connection free"):
                async with db.transaction() as session:
                    await session.execute(text("SELECT 1"))
    finally:
        await db.dispose()

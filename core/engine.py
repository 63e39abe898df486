"""The turn queue: which process runs a chat's next turn, and when.

A job says "this chat has work": an unanswered message, or outbox items to send. Whoever runs
it answers the chat's oldest unanswered message (or sends its oldest pending items), so jobs are
idempotent and their order does not matter; what matters is that a chat's jobs run one at a
time, which both queues guarantee:

- ``LocalTurnQueue`` (the embedded SQLite default, one process): a queue per chat in memory and
  a bound on turns in flight.
- ``ProcrastinateTurnQueue`` (Postgres, any number of processes): each job is a procrastinate
  job whose ``lock`` is the chat, so jobs of one chat run one at a time, oldest first, across
  every worker; a job's ``queueing_lock`` keeps one waiting job per message. A worker that dies
  stops its heartbeat, and another worker puts its jobs back in the queue.

Either way, a job that raises is retried with backoff; a message whose turn keeps failing is
given up after a few attempts by the turn itself (see ``ConversationService``), so one bad
message cannot block its chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from core.store.turns import ChatAddress, Loaded

log = logging.getLogger(__name__)

TASK_NAME = "esoteric.turn"


@dataclass(frozen=True)
class TurnJob:
    """Work for one chat: answer up to ``message_id``, or (without one) send the chat's pending
    outbox items, one of which is ``outbox_id``. The queue carries only the ids (a web chat's key
    is a secret); ``chat`` is known where the job is made, and looked up where it runs."""

    chat: ChatAddress | None
    message_id: int | None = None
    outbox_id: int | None = None
    attempt: int = 1
    # The turn already read when its message was stored (one process, the chat idle).
    loaded: Loaded | None = field(default=None, compare=False, repr=False)

    @property
    def lock(self) -> str:
        assert self.chat is not None
        return self.chat.lock

    @property
    def queueing_lock(self) -> str:
        suffix = f"m{self.message_id}" if self.message_id is not None else "flush"
        return f"{self.lock}:{suffix}"


TurnRunner = Callable[[TurnJob], Awaitable[None]]


class TurnQueue(Protocol):
    concurrency: int
    # Whether a job goes on to answer its chat's later waiting messages. Procrastinate's workers
    # notice a chat's lock is free only when they poll, so a job drains its chat; the local
    # queue runs the chat's next job as soon as one ends, so a job stops at its own message.
    drains_chats: bool

    async def start(self, runner: TurnRunner) -> None:
        """Begin running jobs (this process's turn workers)."""

    async def defer(self, job: TurnJob, delay: float = 0.0) -> None:
        """Queue a job; a job like one already waiting is not queued twice."""

    def is_idle(self, chat: ChatAddress) -> bool:
        """Whether the next job of ``chat`` this queue gets is certainly the chat's next turn
        (nothing of the chat queued or running, in any process)."""

    async def stop(self, grace: float) -> None:
        """Take no new jobs; let running ones finish for up to ``grace`` seconds."""

    async def idle(self) -> None:
        """Wait until this process runs no job (and, locally, none is waiting)."""

    @property
    def running(self) -> int:
        """Jobs running in this process now."""

    @property
    def waiting(self) -> int:
        """Jobs this process knows are waiting (the local queue: all of them)."""


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` + 1 of a failed job: 1, 2, 4 ... 60, with jitter."""
    return min(60.0, 2.0 ** (attempt - 1)) * random.uniform(0.8, 1.2)


MAX_JOB_ATTEMPTS = 8


class LocalTurnQueue:
    """One process: a queue per chat, at most ``concurrency`` turns at once. A slot is taken per
    job, so a busy chat cannot starve the others, and released between a chat's jobs."""

    drains_chats = False

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._chats: dict[str, deque[TurnJob]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._runner: TurnRunner | None = None
        self._early: list[TurnJob] = []
        self._running = 0
        self._closing = False

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._chats.values()) - self._running

    def is_idle(self, chat: ChatAddress) -> bool:
        return self._runner is not None and chat.lock not in self._chats

    async def start(self, runner: TurnRunner) -> None:
        self._runner = runner
        self._closing = False
        early, self._early = self._early, []
        for job in early:
            self._submit(job)

    async def defer(self, job: TurnJob, delay: float = 0.0) -> None:
        if delay > 0:
            handle: asyncio.TimerHandle

            def fire() -> None:
                self._timers.discard(handle)
                self._submit(job)

            handle = asyncio.get_running_loop().call_later(delay, fire)
            self._timers.add(handle)
            return
        self._submit(job)

    def _submit(self, job: TurnJob) -> None:
        if self._closing:
            return
        if self._runner is None:
            self._early.append(job)  # run once the queue starts
            return
        key = job.lock
        queue = self._chats.get(key)
        if queue is not None:
            # Like procrastinate's queueing lock: one waiting job per message (or flush).
            if any(j.queueing_lock == job.queueing_lock for j in list(queue)[1:]):
                return
            queue.append(job)
            return
        queue = self._chats[key] = deque([job])
        task = asyncio.create_task(self._drain(key, queue), name=f"turns:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str, queue: deque[TurnJob]) -> None:
        assert self._runner is not None
        try:
            while queue:
                job = queue[0]
                async with self._slots:
                    self._running += 1
                    try:
                        await self._runner(job)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("turn job failed", extra={"chat": key})
                        if job.attempt < MAX_JOB_ATTEMPTS and len(queue) == 1:
                            # Later jobs of the chat retry it anyway (each answers the oldest).
                            await self.defer(
                                replace(job, attempt=job.attempt + 1, loaded=None),
                                backoff(job.attempt),
                            )
                    finally:
                        self._running -= 1
                queue.popleft()
        finally:
            if self._chats.get(key) is queue:
                del self._chats[key]

    async def idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self, grace: float) -> None:
        self._closing = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if not self._tasks:
            return
        _, still = await asyncio.wait(list(self._tasks), timeout=grace)
        if still:
            log.warning("stopping with %d chat(s) mid-turn; answered at the next start", len(still))
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ProcrastinateTurnQueue:
    """Postgres: turns are procrastinate jobs, locked per chat across every worker.

    ``dsn`` is a libpq URL (``postgresql://...``). Workers beat every ``heartbeat`` seconds;
    jobs of a worker silent for ``stalled_after`` seconds go back to the queue (checked by every
    worker; the first to see them wins, the others find nothing to do). ``run_jobs=False`` only
    defers (a process that stores messages but runs no turns)."""

    drains_chats = True

    def __init__(
        self,
        dsn: str,
        concurrency: int,
        *,
        pool_size: int = 4,
        heartbeat: float = 2.0,
        stalled_after: float = 10.0,
        run_jobs: bool = True,
        stop_grace: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.dsn = dsn
        self.concurrency = concurrency
        self.pool_size = pool_size
        self.heartbeat = heartbeat
        self.stalled_after = stalled_after
        self.run_jobs = run_jobs
        self.stop_grace = stop_grace
        self._app: Any = None
        self._task: Any = None
        self._worker: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._runner: TurnRunner | None = None
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return 0  # in Postgres, for all workers: see the procrastinate_jobs table

    def is_idle(self, chat: ChatAddress) -> bool:
        return False  # another process may run the chat's turn at any moment

    async def start(self, runner: TurnRunner) -> None:
        from procrastinate import App, PsycopgConnector, RetryStrategy

        self._runner = runner
        app = App(
            connector=PsycopgConnector(conninfo=self.dsn, min_size=1, max_size=self.pool_size)
        )

        async def turn(message_id: int | None = None, outbox_id: int | None = None) -> None:
            assert self._runner is not None
            self._running += 1
            self._idle.clear()
            try:
                await self._runner(TurnJob(None, message_id, outbox_id))
            finally:
                self._running -= 1
                if not self._running:
                    self._idle.set()

        self._task = app.task(
            name=TASK_NAME,
            pass_context=False,
            retry=RetryStrategy(max_attempts=MAX_JOB_ATTEMPTS, exponential_wait=2),
        )(turn)
        await app.open_async()
        self._app = app
        if self.run_jobs:
            self._worker = asyncio.create_task(
                app.run_worker_async(
                    name=worker_name(),
                    concurrency=self.concurrency,
                    wait=True,
                    install_signal_handlers=False,
                    delete_jobs="successful",
                    listen_notify=True,
                    # A new job wakes the workers (NOTIFY); a job waiting behind its chat's lock
                    # is looked for again this often (procrastinate's default is 5 s).
                    fetch_job_polling_interval=1.0,
                    update_heartbeat_interval=self.heartbeat,
                    stalled_worker_timeout=self.stalled_after,
                    # Past this, turns still running at shutdown are abandoned: their jobs go
                    # back to the queue as stalled and another worker answers them.
                    shutdown_graceful_timeout=self.stop_grace,
                ),
                name="turn-workers",
            )
            self._maintenance = asyncio.create_task(self._maintain(), name="turn-queue-upkeep")

    async def defer(self, job: TurnJob, delay: float = 0.0) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        assert self._task is not None, "the turn queue is not started"
        options: dict[str, Any] = {"lock": job.lock, "queueing_lock": job.queueing_lock}
        if delay > 0:
            options["schedule_in"] = {"seconds": delay}
        with contextlib.suppress(AlreadyEnqueued):
            await self._task.configure(**options).defer_async(
                message_id=job.message_id, outbox_id=job.outbox_id
            )

    async def idle(self) -> None:
        """Until no job is waiting or running, in any process (jobs scheduled for later, a
        retry's backoff, included): the queue is drained."""
        while True:
            await self._idle.wait()
            row = await self._app.connector.execute_query_one_async(
                "SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            )
            if not row["n"] and not self._running:
                return
            await asyncio.sleep(0.02)

    async def _maintain(self) -> None:
        """Every heartbeat: put back in the queue the jobs a dead worker was running (they hold
        their chat's lock), and keep the job table's statistics fresh."""
        app = self._app
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._requeue_stalled(app)
                await self._analyze_if_changed(app)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again next beat
                log.warning("turn queue upkeep failed: %s", exc)

    async def _requeue_stalled(self, app: Any) -> None:
        from procrastinate.exceptions import ConnectorException, UniqueViolation
        from procrastinate.jobs import Status

        for job in await app.job_manager.get_stalled_jobs(
            seconds_since_heartbeat=self.stalled_after
        ):
            try:
                await app.job_manager.retry_job(job)
                log.warning("turn job %s of a stopped worker queued again", job.id)
            except UniqueViolation:
                # The same turn is queued already (the recovery sweep found its message): that
                # job does the work once this one lets go of the chat's lock.
                with contextlib.suppress(ConnectorException):
                    await app.job_manager.finish_job(job, Status.FAILED, delete_job=False)
                log.warning("turn job %s of a stopped worker dropped: queued again", job.id)
            except ConnectorException:
                pass  # another worker requeued it first

    async def _analyze_if_changed(self, app: Any) -> None:
        """The job fetch plans on the job table's statistics; a burst of jobs makes them stale
        until autovacuum comes by (a minute later, or never where it is off), and the fetch
        then reads every waiting job: 10-20 ms a fetch instead of 1-2 with 1,200 waiting
        (measured by bench/scale.py). Analyze once the table changed by a fifth since."""
        row = await app.connector.execute_query_one_async(
            "SELECT n_live_tup AS live, n_mod_since_analyze AS changed FROM pg_stat_user_tables"
            " WHERE relname = 'procrastinate_jobs'"
        )
        if row is not None and row["changed"] > max(200, row["live"] // 5):
            await app.connector.execute_query_async("ANALYZE procrastinate_jobs")

    async def stop(self, grace: float) -> None:
        """``grace`` is fixed at start for this queue (``stop_grace``): procrastinate's worker
        applies it itself."""
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
        if self._worker is not None:
            # Cancelling asks procrastinate's worker to stop taking jobs and to wait for the
            # running ones.
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._app is not None:
            await self._app.close_async()
            self._app = None


def dsn_of(sqlalchemy_url: str) -> str:
    """The libpq URL procrastinate's psycopg needs, from the SQLAlchemy one."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)

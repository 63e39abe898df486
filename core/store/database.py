"""Engine and session factory for SQLite (embedded default) and Postgres."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import SingletonThreadPool

from core.errors import StoreUnavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 5000
# A write-ahead log larger than this is folded back and started afresh (see ``checkpoint``).
WAL_RESTART_BYTES = 16 * 1024 * 1024
# Tries on the loop's own connection while the database thread holds the write lock.
INLINE_ATTEMPTS = 20
# The database holds customers' messages and phone numbers: only its owner may read it.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_file(url: URL) -> Path | None:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        return Path(url.database)
    return None


def _make_private(path: Path) -> None:
    """Create the SQLite file owner-only (0600), and any directories leading to it that are
    missing (0700), before the first connection opens it; tighten an existing file and its
    ``-wal``/``-shm`` (an earlier release left them world-readable). SQLite gives the ``-wal``
    and ``-shm`` it creates the database file's own mode, so they follow. Directories that
    already exist are left alone: they may be shared (the working directory, say)."""
    missing: list[Path] = []
    for directory in (path.parent, *path.parent.parents):
        if directory.exists():
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs
        directory.chmod(PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # an empty file is an empty database to SQLite
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & ~0o077)
        except FileNotFoundError:
            continue
        except PermissionError as exc:  # someone else's file: say so, SQLite decides the rest
            log.warning("cannot make %s private to its owner: %s", file, exc)


# Keys in a connection's info: its current PRAGMA synchronous, and "this transaction is relaxed".
_SYNCHRONOUS = "esoteric_synchronous"
_RELAXED = "esoteric_relaxed"


def _sqlite_listeners(sync_engine: Engine, busy_timeout_ms: int, hot_path: bool = False) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so that BEGIN IMMEDIATE below applies.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        # FULL: in WAL mode every commit syncs the log, so what commits survives a power loss.
        # (NORMAL syncs only at checkpoints.) The turn path's own writes are relaxed instead
        # (see ``_committed``): an inbound message is made durable by ``Database.sync_log``
        # before it is acknowledged, one sync shared by the messages that arrive together.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA mmap_size=268435456")
        cursor.execute("PRAGMA cache_size=-32000")
        if hot_path:
            # A checkpoint fsyncs; on the turn path it stalls every turn queued behind it.
            # Database.checkpoint runs it beside the turns instead.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the lock up front: a deferred transaction that later upgrades to a write
        # fails at once with "database is locked" instead of waiting out the busy timeout.
        if hot_path:
            raw = connection.connection.dbapi_connection
            # FULL unless this transaction is a relaxed one (see ``_committed``); the pragma
            # is issued only when the mode changes, as it must be, outside a transaction.
            wanted = "NORMAL" if connection.info.get(_RELAXED) else "FULL"
            if connection.info.get(_SYNCHRONOUS, "FULL") != wanted:
                raw.execute(f"PRAGMA synchronous={wanted}")
                connection.info[_SYNCHRONOUS] = wanted
            # Straight to the driver: this runs for every transaction of the turn path, and
            # through SQLAlchemy it cost a third of a small transaction.
            raw.execute("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _committed(
    conn: Connection, durable: bool, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """``fn`` in a transaction on ``conn``; a relaxed one commits without syncing the disk
    (the begin listener sets the connection's mode for each transaction)."""
    if not durable:
        conn.info[_RELAXED] = True
    try:
        with conn.begin():
            return fn(conn, *args, **kwargs)
    finally:
        conn.info.pop(_RELAXED, None)


def _fsync(path: Path) -> None:
    """Sync a file to disk (opened anew each time: SQLite may have deleted and made it again)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # no log: everything was checkpointed into the database file, synced then
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_busy(exc: Exception) -> bool:
    """SQLite's "database is locked": another connection holds the write lock."""
    orig = exc.orig if isinstance(exc, OperationalError) else exc
    return isinstance(orig, sqlite3.OperationalError) and (
        getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "locked" in str(orig)
    )


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable(f"database busy: no connection free ({exc})")
    if isinstance(exc, OperationalError):
        return StoreUnavailable(f"database unavailable: {exc.orig}")
    # The turn path talks to sqlite3 directly; its errors get the same meaning.
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailable(f"database unavailable: {exc}")
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(None, None, exc)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return StoreUnavailable("database connection lost")
    if isinstance(exc, OSError | ConnectionError):
        return StoreUnavailable(f"database unreachable: {exc}")
    return exc


@contextmanager
def _store_errors() -> Iterator[None]:
    """A locked, lost or unreachable database becomes ``StoreUnavailable`` so callers can answer
    politely instead of crashing."""
    try:
        yield
    except (DBAPIError, PoolTimeout, sqlite3.Error, OSError, ConnectionError) as exc:
        translated = _translate(exc)
        if translated is exc:
            raise
        raise translated from exc


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # SQLite only: each transaction runs whole with the stdlib driver, on one dedicated thread
    # (one hop per transaction, not several per statement) or, for the hot path whenever the
    # write lock is free, on the event loop's own thread.
    sync_sessions: sessionmaker[Session] | None = None
    executor: ThreadPoolExecutor | None = None
    busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS
    # The SQLite file's write-ahead log, which ``sync_log`` makes durable (None: no file).
    wal_path: Path | None = None
    # The database thread's connection (its sessions share it), and the event loop's own.
    _hot: Connection | None = field(default=None, init=False, repr=False)
    _loop_hot: Connection | None = field(default=None, init=False, repr=False)
    # Calls queued or running on the database thread, and an event set while there are none.
    _in_thread: int = field(default=0, init=False, repr=False)
    _thread_idle: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    # Group commit: commits asked to be durable (a count), those a finished sync covered, those
    # a failed sync was for (and what it raised), the task running syncs, and a condition.
    _sync_asked: int = field(default=0, init=False, repr=False)
    _sync_done: int = field(default=0, init=False, repr=False)
    _sync_failed: int = field(default=0, init=False, repr=False)
    _sync_error: BaseException | None = field(default=None, init=False, repr=False)
    _syncer: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _synced: asyncio.Condition | None = field(default=None, init=False, repr=False)
    _sync_loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    # Syncs of the log made (for tests and the benchmarks: how many commits shared each).
    log_syncs: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._thread_idle.set()

    async def sync_log(self) -> None:
        """Make every commit made before this call durable (SQLite; Postgres commits are).

        The turn path commits without waiting for the disk, then calls this before a message
        is acknowledged. Callers arriving together share one sync of the write-ahead log, run
        off the event loop: what ``synchronous=FULL`` guarantees (the log synced once the
        commit is in it), for one sync per burst instead of one per message."""
        if self.wal_path is None:
            return
        loop = asyncio.get_running_loop()
        if self._synced is None or self._sync_loop is not loop:
            # First use, or a new event loop (a CLI command runs one per step).
            self._synced, self._sync_loop, self._syncer = asyncio.Condition(), loop, None
        self._sync_asked += 1
        mine = self._sync_asked
        if self._syncer is None or self._syncer.done():
            self._syncer = loop.create_task(self._sync_rounds())
        async with self._synced:
            await self._synced.wait_for(lambda: self._settled >= mine)
        if self._sync_done < mine:
            raise StoreUnavailable(f"the database log could not be synced: {self._sync_error}")

    @property
    def _settled(self) -> int:
        """Callers up to this one have their answer: synced, or told the sync failed."""
        return max(self._sync_done, self._sync_failed)

    async def _sync_rounds(self) -> None:
        assert self.wal_path is not None and self._synced is not None
        loop = asyncio.get_running_loop()
        # A round per wave of callers; a failed round answers its own callers and the next
        # ones get a round of their own (no retry loop when the disk keeps failing).
        while self._settled < self._sync_asked:
            covers = self._sync_asked  # every commit counted so far is in the log already
            try:
                await loop.run_in_executor(None, _fsync, self.wal_path)
            except OSError as exc:
                log.error("syncing %s failed: %s", self.wal_path, exc)
                self._sync_failed, self._sync_error = covers, exc
            else:
                self._sync_done = covers
                self.log_syncs += 1
            async with self._synced:
                self._synced.notify_all()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One session and one transaction; errors from a locked or lost database become
        ``StoreUnavailable`` so callers can answer politely instead of crashing."""
        with _store_errors():
            async with self.sessions() as session, session.begin():
                yield session

    async def run(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(session, ...)`` in one transaction and return its result. ``fn`` is plain
        synchronous SQLAlchemy; on Postgres it runs through the async engine's greenlet bridge,
        on SQLite on the database thread."""
        with _store_errors():
            if self.sync_sessions is not None and self.executor is not None:
                return await self._on_thread(functools.partial(self._run_sync, fn, *args, **kwargs))
            async with self.sessions() as session, session.begin():
                return await session.run_sync(lambda s: fn(s, *args, **kwargs))

    async def run_core(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like ``run`` for plain Core work: ``fn`` gets a ``Connection`` in a transaction,
        without the ORM session's bookkeeping (the turn path runs three of these per turn).

        On SQLite, when no connection holds the write lock, the transaction runs right here on
        the event loop's thread, on a connection of the loop's own: it is a few statements
        against a local file, a fraction of a millisecond, while handing it to the database
        thread and back cost more than the SQL itself (two thread wake-ups and the GIL passed
        both ways). If the lock is taken (another process, or a session on the database thread)
        BEGIN IMMEDIATE fails at once, nothing has run, and the transaction goes to the database
        thread to wait its turn there with the usual busy timeout, never blocking the loop."""
        return await self._core(True, fn, *args, **kwargs)

    async def run_core_relaxed(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``run_core`` for a write that may be lost to a power cut without harm (the next
        durable commit makes it durable anyway): on SQLite it commits without waiting for the
        disk. Each such write saves a sync, about as long as the rest of a turn."""
        return await self._core(False, fn, *args, **kwargs)

    async def _core(self, durable: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with _store_errors():
            if self.sync_sessions is not None and self.executor is not None:
                for _ in range(INLINE_ATTEMPTS):
                    try:
                        return self._run_core_inline(durable, fn, *args, **kwargs)
                    except (OperationalError, sqlite3.OperationalError) as exc:
                        if not _is_busy(exc):
                            raise
                    if not self._in_thread:
                        break  # another process holds the lock: wait for it on the thread
                    # The database thread holds it (an ORM session of this process): try again
                    # once that is done, rather than queue behind it and keep it busy.
                    await self._thread_idle.wait()
                return await self._on_thread(
                    functools.partial(self._run_core_sync, durable, fn, *args, **kwargs)
                )
            async with self.engine.begin() as conn:
                return await conn.run_sync(lambda c: fn(c, *args, **kwargs))

    async def _on_thread(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the database thread."""
        assert self.executor is not None
        self._in_thread += 1
        self._thread_idle.clear()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, call)
        finally:
            self._in_thread -= 1
            if not self._in_thread:
                self._thread_idle.set()

    def _run_core_inline(self, durable: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        hot = self._loop_hot
        if hot is None or hot.invalidated or hot.closed:
            assert self.sync_sessions is not None
            # Made on the loop's thread: the pool gives each thread a connection of its own.
            hot = self._loop_hot = self.sync_sessions.kw["bind"].connect()
            raw = hot.connection.driver_connection
            assert raw is not None
            # On the loop's thread a locked database must fail at once, not wait.
            # (PRAGMAs on the driver: through SQLAlchemy they would begin a transaction.)
            raw.execute("PRAGMA busy_timeout=0")
        return _committed(hot, durable, fn, *args, **kwargs)

    def _run_core_sync(self, durable: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The database thread keeps one connection checked out: taking it from the pool and
        # resetting it on return cost as much as the turn's SQL. It is made here, on that
        # thread, so it is the same connection the thread's sessions use.
        if self._hot is None or self._hot.invalidated or self._hot.closed:
            assert self.sync_sessions is not None
            self._hot = self.sync_sessions.kw["bind"].connect()
        return _committed(self._hot, durable, fn, *args, **kwargs)

    def _close_hot(self) -> None:
        if self._hot is not None:
            self._hot.close()
            self._hot = None

    def _run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self.sync_sessions is not None
        with self.sync_sessions() as session, session.begin():
            return fn(session, *args, **kwargs)

    def checkpoint(self) -> None:
        """Fold SQLite's write-ahead log back into the database file, on a connection of its
        own so turns go on meanwhile (PASSIVE never blocks writers). Call it off the event loop,
        every few seconds: the turn path's connection never checkpoints by itself."""
        if self.sync_sessions is None:
            return
        url = self.sync_sessions.kw["bind"].url
        if not url.database or url.database == ":memory:":
            return
        # Under a steady stream of writes a passive checkpoint never catches up with the log's
        # end, so the log is never started afresh and only grows (80 MB in 8 s of
        # bench/http_api.py). Past a size, RESTART waits for the writer in progress and holds
        # new ones back (a few milliseconds: they wait on the database thread) until the log is
        # folded back and can start from its beginning again.
        wal = self.wal_path
        big = wal is not None and wal.exists() and wal.stat().st_size > WAL_RESTART_BYTES
        mode = "RESTART" if big else "PASSIVE"
        connection = sqlite3.connect(url.database, timeout=1)
        try:
            connection.execute(f"PRAGMA wal_checkpoint({mode})")
        finally:
            connection.close()

    async def keep_checkpointing(self, every: float = 2.0) -> None:
        """Run ``checkpoint`` every ``every`` seconds until cancelled (SQLite only)."""
        while self.sync_sessions is not None:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self.checkpoint)
            except sqlite3.Error as exc:
                log.warning("SQLite checkpoint skipped: %s", exc)

    @asynccontextmanager
    async def singleton(self, name: str) -> AsyncIterator[bool]:
        """Whether this process may run the job ``name`` now: on Postgres, only one process
        at a time (a session advisory lock, released after; other processes skip the run).
        SQLite has one process."""
        if not self.is_postgres:
            yield True
            return
        with _store_errors():
            async with self.engine.connect() as conn:
                key = {"k": f"esoteric:{name}"}
                mine = bool(
                    (
                        await conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), key)
                    ).scalar()
                )
                await conn.commit()
                try:
                    yield mine
                finally:
                    if mine:
                        await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), key)
                        await conn.commit()

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.sync_sessions is not None and self.executor is not None:
            bind = self.sync_sessions.kw["bind"]
            # sqlite3 connections belong to the thread that made them.
            if self._loop_hot is not None:
                self._loop_hot.close()
                self._loop_hot = None
            await self._on_thread(self._close_hot)
            await self._on_thread(bind.dispose)
            self.executor.shutdown(wait=True)


def create_database(
    url: str,
    echo: bool = False,
    busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    pool_size: int = 10,
    pool_timeout: float = 30.0,
) -> Database:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        path = _sqlite_file(parsed)
        if path is not None:
            _make_private(path)
        kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
        # One writer at a time is all SQLite allows: a single pooled connection makes sessions
        # queue in the event loop instead of in SQLite's busy handler.
        kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60)
    else:
        # Turns hold a connection only for their short transactions, so a pool far smaller
        # than the turns in flight serves them; waiting for one is bounded by pool_timeout,
        # and running out becomes StoreUnavailable, never a raw driver error.
        # No pre-ping: it cost a round trip (BEGIN; ROLLBACK) per checkout, a third of the
        # turn's transactions. A connection that died (a Postgres restart) fails its first
        # statement once and is replaced; that error is StoreUnavailable, which callers retry.
        kwargs.update(
            pool_pre_ping=False,
            pool_recycle=1800,
            pool_size=pool_size,
            max_overflow=pool_size // 2,
            pool_timeout=pool_timeout,
        )
    engine = create_async_engine(parsed, **kwargs)
    if not sqlite:
        return Database(engine, async_sessionmaker(engine, expire_on_commit=False))
    _sqlite_listeners(engine.sync_engine, busy_timeout_ms)
    sync_engine = create_engine(
        parsed.set(drivername="sqlite"),
        echo=echo,
        poolclass=SingletonThreadPool,
        connect_args={"timeout": busy_timeout_ms / 1000},
    )
    _sqlite_listeners(sync_engine, busy_timeout_ms, hot_path=True)
    path = _sqlite_file(parsed)
    return Database(
        engine,
        async_sessionmaker(engine, expire_on_commit=False),
        sessionmaker(sync_engine, expire_on_commit=False),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="esoteric-sqlite"),
        busy_timeout_ms=busy_timeout_ms,
        wal_path=Path(f"{path}-wal") if path is not None else None,
    )


async def ping(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text("SELECT 1"))

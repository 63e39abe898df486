"""Shared fixtures: a guard against the internet, and real databases (SQLite and Postgres)."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from core.store.database import Database, create_database
from core.store.schema import upgrade_to_head
from tests.support.desk import slack_stand_in_users
from tests.support.groq_server import GroqStandIn
from tests.support.seeded import seed
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer

POSTGRES_ADMIN_DSN = os.environ.get(
    "ESOTERIC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PAYLOADS = SHARED / "payloads"
MODEL_DIR = SHARED / "models" / "all-MiniLM-L6-v2"


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return True  # unix sockets and the like
    if host in ("localhost", "", "::1"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_internet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to reach a non-loopback address fails the test loudly."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guard(address: Any) -> None:
        if isinstance(address, tuple) and not _is_local(address[0]):
            raise AssertionError(f"test tried to reach the network: {address!r}")

    def connect(self: socket.socket, address: Any) -> Any:
        guard(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        guard(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_local(host):
            raise AssertionError(f"test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's own settings or .env."""
    for name in list(os.environ):
        ours = name.startswith(("ESOTERIC_", "SLACK_", "TELEGRAM_", "GROQ_"))
        if (ours or name == "DATABASE_URL") and name != "ESOTERIC_TEST_POSTGRES":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'esoteric.db'}"


# Tests in this xdist group start several ``esoteric serve`` processes on one Postgres and need
# most of its 100 connections (tests/e2e/conftest.py groups them).
SEVERAL_PROCESSES = "several-processes"


@pytest.hookimpl(trylast=True)  # after tests/e2e/conftest.py has marked the group
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The several-process group first, then the tests without Postgres, then the rest
    (otherwise in collection order; pytest-xdist hands tests out in this order). While the
    group runs it keeps Postgres to itself (the gate below), so the other worker should have
    tests it can run beside it: in collection order it reached Postgres tests and waited at
    the gate, or held it and kept the group waiting (over a minute of each, measured)."""

    def rank(item: pytest.Item) -> int:
        group = item.get_closest_marker("xdist_group")
        if group is not None and SEVERAL_PROCESSES in group.args:
            return 0
        return 2 if item.get_closest_marker("postgres") is not None else 1

    items.sort(key=rank)


# SQLite cannot reflect an expression index (ix_messages_history): Alembic's models-against-
# migrations comparison skips it there and warns. Postgres compares it, and
# tests/integration/test_store.py checks that SQLite's turn reads use it.
UNREFLECTED_EXPRESSION_INDEX = (
    pytest.mark.filterwarnings("ignore:.*expression-based index ix_messages_history"),
    pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based"),
)

_POSTGRES_GATE = Path(tempfile.gettempdir()) / "esoteric-tests-postgres.lock"


@contextlib.contextmanager
def _postgres_gate(exclusive: bool) -> Iterator[None]:
    """A lock shared by the test processes (pytest-xdist): every test holding a Postgres
    database holds it shared, a several-process test alone, so that while one runs no other
    test takes Postgres connections beside it."""
    with _POSTGRES_GATE.open("a") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.fixture
async def postgres_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh Postgres database for one test, dropped afterwards."""
    group = request.node.get_closest_marker("xdist_group")
    import asyncpg

    with _postgres_gate(exclusive=group is not None and SEVERAL_PROCESSES in group.args):
        name = f"esoteric_test_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace(
            "postgresql://", "postgresql+asyncpg://"
        )
        try:
            yield f"{base}/{name}"
        finally:
            admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on the embedded SQLite and on Postgres."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@asynccontextmanager
async def _migrated(url: str) -> AsyncIterator[Database]:
    # On SQLite, a copy of a database migrated once per test process (tests/support/seeded.py).
    await seed(url)
    db = create_database(url)
    await upgrade_to_head(db)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    async with _migrated(db_url) as db:
        yield db


@pytest.fixture
async def sqlite_database(sqlite_url: str) -> AsyncIterator[Database]:
    async with _migrated(sqlite_url) as db:
        yield db


# Stand-ins shared by the tests that drive several platforms (handoff, admin, LLM).
@pytest.fixture
async def telegram_api() -> AsyncIterator[TelegramServer]:
    async with TelegramServer() as server:
        yield server


@pytest.fixture
async def slack_api() -> AsyncIterator[SlackStandIn]:
    server = SlackStandIn()
    await server.start()
    slack_stand_in_users(server)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def groq_server() -> AsyncIterator[GroqStandIn]:
    server = GroqStandIn()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    """Tests that configure logging leave the root logger as they found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)

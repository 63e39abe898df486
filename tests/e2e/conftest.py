"""Fixtures of the tests that run real ``esoteric serve`` processes on one Postgres and Redis."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from core.store.database import Database, create_database
from core.store.schema import upgrade_to_head
from tests.conftest import SEVERAL_PROCESSES


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A Redis database of the test's own, emptied afterwards. Under pytest-xdist each worker
    draws from its own numbers (gw0 1-7, gw1 8-14, ...), so two workers never share one."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    per_worker = 15 // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    number = 1 + worker * per_worker + random.randrange(per_worker)
    url = f"redis://127.0.0.1:6379/{number}"
    client = redis.from_url(url)
    await client.flushdb()
    try:
        yield url
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
async def migrated(postgres_url: str) -> AsyncIterator[Database]:
    db = create_database(postgres_url)
    await upgrade_to_head(db)  # a shared database is migrated on purpose
    try:
        yield db
    finally:
        await db.dispose()


# Tests that start several ``esoteric serve`` processes on one Postgres: under pytest-xdist
# (``--dist loadgroup``) they run one after another on one worker, since two at once could
# pass Postgres's 100 connections, and while one runs the other worker's tests wait before
# taking a Postgres database (the gate in tests/conftest.py). Everything else runs beside them.
_SEVERAL_PROCESSES = (
    "test_many_processes.py",
    "test_voice_crash.py",
    "test_dashboard_processes.py",
)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups off the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in _SEVERAL_PROCESSES:
            item.add_marker(pytest.mark.xdist_group(SEVERAL_PROCESSES))

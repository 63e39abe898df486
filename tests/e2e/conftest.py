"""Fixtures of the tests that run real ``esoteric serve`` processes on one Postgres and Redis."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from core.store.database import Database, create_database
from core.store.schema import upgrade_to_head


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A Redis database of the test's own, emptied afterwards."""
    number = random.randint(1, 15)
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

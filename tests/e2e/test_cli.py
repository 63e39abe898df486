"""The rest of the command line: migrate, sessions cleanup, and a database behind its schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

pytestmark = pytest.mark.postgres


def sql(dsn: str, statement: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(statement))
        finally:
            await conn.close()

    return asyncio.run(run())


def esoteric(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_"))
    }
    environment.pop("DATABASE_URL", None)
    # No embedding model and so no download attempt: retrieval is not what these tests check.
    environment["ESOTERIC_EMBEDDING_MODEL_DIR"] = "/nonexistent/embedding-model"
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def test_migrate_then_chat_then_cleanup_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": postgres_url, "ESOTERIC_DATA_DIR": str(tmp_path)}
    refused = esoteric("chat", **env)
    assert refused.returncode == 2
    assert "DATABASE_URL" in refused.stderr and "esoteric migrate" in refused.stderr

    migrated = esoteric("migrate", **env)
    assert migrated.returncode == 0, migrated.stderr
    assert "is at revision" in migrated.stdout and "postgresql+asyncpg" in migrated.stdout

    chat = esoteric("chat", stdin="I need a car loan\n", **env)
    assert chat.returncode == 0, chat.stderr
    assert "How much would you like to borrow" in chat.stdout

    # Make the conversation old, then sweep it.
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    sql(dsn, "UPDATE conversations SET last_activity_at = now() - interval '2 hours'")
    cleanup = esoteric("sessions", "cleanup", **env)
    assert cleanup.returncode == 0, cleanup.stderr
    assert cleanup.stdout.strip() == "closed 1 idle session(s)"
    again = esoteric("sessions", "cleanup", **env)
    assert again.stdout.strip() == "closed 0 idle session(s)"
    reasons = sql(dsn, "SELECT status, close_reason FROM conversations")
    assert [tuple(r) for r in reasons] == [("closed", "idle")]

"""The schema check at startup: one query when the database is at the head, Alembic otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from core.store.database import create_database
from core.store.schema import (
    current_revision,
    declared_head,
    head_revision,
    is_at_head,
    upgrade_to,
    upgrade_to_head,
)


def test_the_migration_files_name_alembics_head() -> None:
    assert declared_head() is not None
    assert declared_head() == head_revision()


async def test_an_old_database_is_still_upgraded(tmp_path: Path) -> None:
    db = create_database(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await upgrade_to(db, "0003")
        assert await current_revision(db) == "0003"
        assert not await is_at_head(db)

        await upgrade_to_head(db)
        assert await current_revision(db) == head_revision()
        assert await is_at_head(db)
        async with db.engine.connect() as conn:
            # 0004's tables exist: the upgrade really ran.
            await conn.execute(text("SELECT count(*) FROM outbox"))
    finally:
        await db.dispose()


async def test_a_new_database_is_created_and_a_current_one_left_alone(tmp_path: Path) -> None:
    db = create_database(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    try:
        assert not await is_at_head(db)
        await upgrade_to_head(db)
        assert await is_at_head(db)
        await upgrade_to_head(db)  # at the head: nothing to do
        assert await current_revision(db) == head_revision()
    finally:
        await db.dispose()


def test_an_unclear_history_is_left_to_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.store.schema as schema

    for name, down in (("a", None), ("b", "a"), ("c", "a")):  # two heads
        (tmp_path / f"{name}.py").write_text(
            f'revision: str = "{name}"\ndown_revision: str | None = {down!r}\n'
        )
    monkeypatch.setattr(schema, "VERSIONS", tmp_path)
    assert declared_head() is None

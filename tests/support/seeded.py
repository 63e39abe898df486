"""A fresh data directory's database, already at the head revision, for the tests that open a
runtime per test.

On an embedded database the runtime upgrades the schema in a child process (``python -m
core.store.schema``): about 1.3 s of CPU on a slow machine, paid again by every such test. Here
the migrations run once per test process, into a template, and each test gets a copy of it;
``open_runtime`` then finds the schema at its head and starts at once. The upgrade itself,
child process included, keeps its own tests (tests/e2e/test_lean_imports.py and the CLI's)."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

from bot.settings import Settings
from core.store.database import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, create_database
from core.store.schema import upgrade_to_head

_template: tempfile.TemporaryDirectory[str] | None = None


async def _template_file() -> Path:
    global _template
    if _template is None:
        holder = tempfile.TemporaryDirectory(prefix="esoteric-template-")
        path = Path(holder.name) / "esoteric.db"
        db = create_database(f"sqlite+aiosqlite:///{path}")
        try:
            await upgrade_to_head(db)
        finally:
            await db.dispose()
        # Everything in the main file, so that the file alone is the whole database.
        raw = sqlite3.connect(path)
        try:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
        _template = holder  # removed when the test process exits
    return Path(_template.name) / "esoteric.db"


async def seed_database(settings: Settings) -> None:
    """Copy the template into ``settings``' data directory, unless it holds a database already
    (a test reopening its data directory) or the database is not the embedded one."""
    if settings.is_embedded_database and settings.database_url is None:
        await seed_file(settings.data_dir.resolve() / "esoteric.db")


async def seed_file(target: Path) -> None:
    """Copy the template to ``target`` unless something is there already."""
    _copy(await _template_file(), target)


def _copy(template: Path, target: Path) -> None:
    if target.exists():
        return
    # As the store makes them: directories owner-only, the file too.
    missing = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR_MODE)
        directory.chmod(PRIVATE_DIR_MODE)
    shutil.copyfile(template, target)
    target.chmod(PRIVATE_FILE_MODE)

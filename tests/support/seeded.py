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

from sqlalchemy import make_url

from bot.settings import Settings
from core.store.database import _make_private, _sqlite_file, create_database
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
    """``seed`` for the database ``settings`` name, when it is the embedded one."""
    if settings.is_embedded_database:
        await seed(settings.resolved_database_url)


async def seed(url: str) -> None:
    """Copy the template to the SQLite file ``url`` names, unless a database is there already
    (a test reopening its data directory); other databases are left alone."""
    parsed = make_url(url)
    target = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if target is None or target.exists():
        return
    template = await _template_file()
    # Made as the store makes it (owner-only file and missing directories), then filled.
    _make_private(target)
    shutil.copyfile(template, target)

"""Schema migrations through Alembic, on the application's own async engine.

Alembic (with Mako and Pygments behind it) costs about 9 MiB and a tenth of a second to import,
and a database already at the latest revision needs none of it: the revision is read with one
query and the head from the migration files' own ``revision`` lines. Alembic is imported only
when an upgrade is due, or when either cheap reading is inconclusive. A long-running process
upgrades through ``upgrade_to_head_apart``: a child process runs Alembic and exits, so the server
never holds it."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

import migrations
from core.errors import StoreError
from core.store.database import Database, create_database

if TYPE_CHECKING:
    from alembic.config import Config

VERSIONS = Path(migrations.__file__).parent / "versions"
_REVISION = re.compile(r"^revision(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision(?::[^=]*)?=\s*(.+)$", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


def is_ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name``: the job queue's tables (procrastinate's, on Postgres) are
    created by migration 0004 from procrastinate's own schema, not described by our models."""
    return not (type_ == "table" and name is not None and name.startswith("procrastinate_"))


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def head_revision() -> str | None:
    """The latest revision, as Alembic computes it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def declared_head() -> str | None:
    """The latest revision read from the migration files without Alembic: the one revision no
    other revision points back to. None when that is not clear-cut (no files, several heads,
    a line this reading does not understand): the caller then asks Alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        source = path.read_text("utf-8")
        revision, down = _REVISION.findall(source), _DOWN.findall(source)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        parents.update(_QUOTED.findall(down[0]))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _stored_revision(conn: Connection) -> tuple[bool, str | None]:
    """(known, revision) from the version table with one query; known is False when that is
    not enough to tell (several rows: Alembic's own reading explains them)."""
    try:
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:
        # No version table yet: a new database.
        return True, None
    if len(rows) > 1:
        return False, None
    return True, (str(rows[0]) if rows else None)


async def current_revision(db: Database) -> str | None:
    def _current(conn: Connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()

    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


async def _at_declared_head(db: Database) -> bool:
    """True when the database is surely at the head, without importing Alembic."""
    head = declared_head()
    if head is None:
        return False
    # Its own connection: a failed query (no version table) must not spoil a transaction.
    async with db.engine.connect() as conn:
        known, stored = await conn.run_sync(_stored_revision)
    return known and stored == head


async def upgrade_to_head(db: Database) -> None:
    if await _at_declared_head(db):
        return
    await upgrade_to(db, "head")


# The database the child process of ``upgrade_to_head_apart`` upgrades (an environment variable,
# not an argument: a URL may hold a password, and arguments are visible to every user).
UPGRADE_URL_VARIABLE = "ESOTERIC_UPGRADE_DATABASE_URL"


async def upgrade_to_head_apart(db: Database) -> None:
    """``upgrade_to_head`` for a long-running process: a database behind the head is upgraded
    by a child process (``python -m core.store.schema``), so that Alembic and the migrations
    (about 9 MiB, never freed once imported) stay out of the server's memory."""
    if await _at_declared_head(db):
        return
    url = db.engine.url.render_as_string(hide_password=False)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core.store.schema",
        env={**os.environ, UPGRADE_URL_VARIABLE: url},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await process.communicate()
    if process.returncode != 0:
        lines = [line for line in errors.decode(errors="replace").splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {process.returncode}"
        raise StoreError(f"the database schema could not be upgraded: {reason}")


async def upgrade_to(db: Database, revision: str) -> None:
    """Run Alembic's upgrade to ``revision`` on ``db`` (imports Alembic)."""
    from alembic import command

    cfg = alembic_config()

    def _upgrade(conn: Connection) -> None:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def is_at_head(db: Database) -> bool:
    if await _at_declared_head(db):
        return True
    return await current_revision(db) == head_revision()


async def _upgrade_child(url: str) -> None:
    db = create_database(url)
    try:
        await upgrade_to(db, "head")
    finally:
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(_upgrade_child(os.environ[UPGRADE_URL_VARIABLE]))

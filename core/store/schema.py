"""Schema migrations through Alembic, on the application's own async engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import migrations
from core.store.database import Database


def is_ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name``: the job queue's tables (procrastinate's, on Postgres) are
    created by migration 0004 from procrastinate's own schema, not described by our models."""
    return not (type_ == "table" and name is not None and name.startswith("procrastinate_"))


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(db: Database) -> str | None:
    def _current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


async def upgrade_to_head(db: Database) -> None:
    cfg = alembic_config()

    def _upgrade(conn: Connection) -> None:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def is_at_head(db: Database) -> bool:
    return await current_revision(db) == head_revision()

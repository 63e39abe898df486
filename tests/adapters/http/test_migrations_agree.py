"""The models and the migrations describe the same schema (the API sessions table included), on
SQLite and on Postgres."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from core.store.database import Database
from core.store.models import Base
from core.store.schema import is_ours
from tests.conftest import UNREFLECTED_EXPRESSION_INDEX

pytestmark = list(UNREFLECTED_EXPRESSION_INDEX)


async def test_models_and_migrations_agree(database: Database) -> None:
    def differences(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": is_ours}
        )
        return list(compare_metadata(context, Base.metadata))

    def api_sessions(conn: Connection) -> tuple[list[str], list[str]]:
        inspector = inspect(conn)
        columns = [c["name"] for c in inspector.get_columns("api_sessions")]
        indexes = [i["name"] for i in inspector.get_indexes("api_sessions")]
        return columns, indexes

    async with database.engine.connect() as conn:
        diff = await conn.run_sync(differences)
        columns, indexes = await conn.run_sync(api_sessions)
    assert diff == []
    assert columns == ["id", "key_hash", "created_at", "ended_at"]
    assert indexes == ["ix_api_sessions_key_hash"]

"""The models and the migrations describe the same schema: after upgrading to head, Alembic's
autogenerate comparison finds nothing to add, drop or alter (SQLite and Postgres)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
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

    async with database.engine.connect() as conn:
        found = await conn.run_sync(differences)
    assert found == []

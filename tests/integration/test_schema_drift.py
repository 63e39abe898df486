"""The models and the migrations describe the same schema: after upgrading to head, Alembic's
autogenerate comparison finds nothing to add, drop or alter (SQLite and Postgres)."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from core.store.database import Database
from core.store.models import Base
from core.store.schema import is_ours


# SQLite cannot reflect an expression index (ix_messages_history), so the comparison skips it
# there and says so; Postgres compares it, and tests/integration/test_store.py checks that
# SQLite's turn reads use it.
@pytest.mark.filterwarnings("ignore:.*expression-based index ix_messages_history")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
async def test_models_and_migrations_agree(database: Database) -> None:
    def differences(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": is_ours}
        )
        return list(compare_metadata(context, Base.metadata))

    async with database.engine.connect() as conn:
        found = await conn.run_sync(differences)
    assert found == []

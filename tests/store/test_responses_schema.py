"""The responses table: the migration creates exactly what tables.py declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from gateway import migrate
from gateway.store.database import create_engine
from gateway.store.tables import metadata


async def test_the_migrated_responses_table_matches_tables_py(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(migrate.run_alembic)  # every revision, as on an existing database

        def differences(connection: Connection) -> list[object]:
            context = MigrationContext.configure(connection)
            return [d for d in compare_metadata(context, metadata) if "responses" in repr(d)]

        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()

"""The Alembic migrations build exactly the tables of gateway/store/tables.py, on SQLite and Postgres."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from gateway import migrate
from gateway.store.tables import Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": False}
    )
    return list(compare_metadata(context, Base.metadata))


def _foreign_keys(connection: Connection) -> dict[str, list[tuple[Any, ...]]]:
    inspector = inspect(connection)
    return {
        table: sorted(
            (
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                tuple(fk["referred_columns"]),
                (fk.get("options") or {}).get("ondelete"),
            )
            for fk in inspector.get_foreign_keys(table)
        )
        for table in sorted(Base.metadata.tables)
    }


def _declared_foreign_keys() -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: sorted(
            (
                tuple(c.name for c in fk.columns),
                fk.referred_table.name,
                tuple(e.column.name for e in fk.elements),
                fk.ondelete,
            )
            for fk in table.foreign_key_constraints
        )
        for name, table in sorted(Base.metadata.tables.items())
    }


def _nullability(connection: Connection) -> dict[str, dict[str, bool]]:
    inspector = inspect(connection)
    return {
        table: {column["name"]: bool(column["nullable"]) for column in inspector.get_columns(table)}
        for table in sorted(Base.metadata.tables)
    }


async def test_migrations_build_exactly_the_declared_tables(empty_database_url: str) -> None:
    engine = create_async_engine(empty_database_url)
    try:
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            # tables, columns, types, nullability, indexes and unique constraints (alembic's autogenerate)
            assert await connection.run_sync(_differences) == []
            # autogenerate does not compare a primary key's nullability or every foreign-key option
            assert await connection.run_sync(_foreign_keys) == _declared_foreign_keys()
            declared = {
                name: {c.name: bool(c.nullable) for c in table.columns}
                for name, table in sorted(Base.metadata.tables.items())
            }
            assert await connection.run_sync(_nullability) == declared
    finally:
        await engine.dispose()

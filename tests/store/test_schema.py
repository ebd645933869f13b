"""The Alembic migrations build exactly the tables of gateway/store/tables.py, on SQLite and Postgres; a new
database created from tables.py (without Alembic) is the same database."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from gateway import migrate
from gateway.store.database import Database
from gateway.store.tables import metadata


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": False}
    )
    return list(compare_metadata(context, metadata))


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
        for table in sorted(metadata.tables)
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
        for name, table in sorted(metadata.tables.items())
    }


def _nullability(connection: Connection) -> dict[str, dict[str, bool]]:
    inspector = inspect(connection)
    return {
        table: {column["name"]: bool(column["nullable"]) for column in inspector.get_columns(table)}
        for table in sorted(metadata.tables)
    }


async def test_migrations_build_exactly_the_declared_tables(empty_database_url: str) -> None:
    engine = create_async_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(migrate.run_alembic)  # every revision, as on an existing database
        async with engine.connect() as connection:
            # tables, columns, types, nullability, indexes and unique constraints (alembic's autogenerate)
            assert await connection.run_sync(_differences) == []
            # autogenerate does not compare a primary key's nullability or every foreign-key option
            assert await connection.run_sync(_foreign_keys) == _declared_foreign_keys()
            declared = {
                name: {c.name: bool(c.nullable) for c in table.columns}
                for name, table in sorted(metadata.tables.items())
            }
            assert await connection.run_sync(_nullability) == declared
    finally:
        await engine.dispose()


def _schema(connection: Connection) -> dict[str, Any]:
    """Everything the database reports of the gateway's tables and Alembic's: columns with their types,
    nullability and server defaults, keys, indexes, unique constraints and foreign keys; on Postgres also the
    gateway's functions and every index, with their whole definitions (a partial index's condition)."""
    inspector = inspect(connection)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")), c.get("autoincrement"))
                for c in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), i["unique"]) for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    str(f["options"]),
                )
                for f in inspector.get_foreign_keys(table)
            ),
        }
    if connection.dialect.name == "sqlite":  # every index's whole definition (a partial index's condition)
        rows = connection.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        schema["index_definitions"] = sorted(tuple(row) for row in rows)
    if connection.dialect.name == "postgresql":  # the functions the statements call (tables.py)
        rows = connection.exec_driver_sql(
            "SELECT proname, pg_get_functiondef(oid) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        )
        schema["functions"] = sorted(tuple(row) for row in rows)
        rows = connection.exec_driver_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        )
        schema["index_definitions"] = sorted(tuple(row) for row in rows)
    return schema


async def test_a_new_database_is_created_as_the_migrations_build_it(
    empty_database_pair: tuple[str, str],
) -> None:
    migrated_url, created_url = empty_database_pair
    migrated, created = create_async_engine(migrated_url), create_async_engine(created_url)
    try:
        async with migrated.begin() as connection:
            await connection.run_sync(migrate.run_alembic)
        database = Database(created, lease_seconds=60)
        await migrate.upgrade(database)  # an empty database: created from tables.py, stamped at the head
        assert await migrate.current_revision(database) == migrate.head_revision()
        await database.close()
        async with migrated.connect() as a, created.connect() as b:
            expected = await a.run_sync(_schema)
            assert await b.run_sync(_schema) == expected
        if "functions" in expected:
            assert [name for name, _ in expected["functions"]] == ["gateway_owned_conversations"]
    finally:
        await migrated.dispose()
        await created.dispose()

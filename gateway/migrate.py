"""Apply the Alembic migrations on an async engine (used by `gateway migrate`, `serve` and tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import gateway


def migrations_dir() -> Path:
    """Locate the migrations folder: packaged inside the wheel, or at the top of a checkout."""
    package = Path(gateway.__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the gateway's Alembic migrations are missing from this installation")


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database schema to the newest revision (idempotent)."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Several replicas may start at once: one migrates, the others wait for it.
            await connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7261002)")
        await connection.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    """Return the revision the database is at, or None for an empty database."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)

"""Apply the Alembic migrations on an async engine (used by `gateway migrate`, `serve` and tests).

A database already at the newest revision is recognised with one query, without importing Alembic:
that keeps `gateway serve` quick to start and its memory small (Alembic is ~9 MB once imported).
A database without any table is created from store/tables.py and stamped at the newest revision, as
Alembic's own docs suggest for new databases: the same schema the migrations build (a test compares the
two on SQLite and Postgres), in one step and without Alembic. Any other database is migrated by Alembic.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Column, Connection, MetaData, PrimaryKeyConstraint, String, Table, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

import gateway
from gateway.store.tables import metadata

# Revision files are named NNNN_<slug>.py and each one's revision id is its NNNN (a test checks both,
# and that the newest number is Alembic's single head).
_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


def migrations_dir() -> Path:
    """Locate the migrations folder: packaged inside the wheel, or at the top of a checkout."""
    package = Path(gateway.__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the gateway's Alembic migrations are missing from this installation")


def head_revision() -> str:
    """The newest revision id shipped with this installation, read from the revision files' names."""
    found = [
        m.group(1) for p in (migrations_dir() / "versions").iterdir() if (m := _REVISION_FILE.match(p.name))
    ]
    if not found:
        raise FileNotFoundError("the gateway's Alembic revision files are missing from this installation")
    return max(found)


# Alembic's version table, as Alembic creates it.
_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def create_new(connection: Connection) -> None:
    """Create the gateway's tables in an empty database and record the newest revision."""
    metadata.create_all(connection)
    _VERSION.create(connection)
    connection.execute(_VERSION.insert().values(version_num=head_revision()))


def _create_or_upgrade(connection: Connection) -> None:
    if inspect(connection).get_table_names():
        run_alembic(connection)
    else:
        create_new(connection)


def run_alembic(connection: Connection, revision: str = "head") -> None:
    """Migrate with Alembic to `revision` (the newest by default), whatever the database holds."""
    from alembic import command  # imported only when there is something to migrate
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def _stored_revision(engine: AsyncEngine) -> str | None:
    """The revision recorded in the database, or None (empty database, no version table yet)."""
    async with engine.connect() as connection:
        try:
            row = (await connection.execute(text("SELECT version_num FROM alembic_version"))).first()
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise  # the database itself is unreachable: not "no table"
            return None
    return None if row is None else str(row[0])


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database schema to the newest revision (idempotent; one query when already there)."""
    if await _stored_revision(engine) == head_revision():
        return
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Several replicas may start at once: one migrates, the others wait for it.
            await connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7261002)")
        await connection.run_sync(_create_or_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    """Return the revision the database is at, or None for an empty database."""
    return await _stored_revision(engine)

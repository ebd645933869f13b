"""Apply the Alembic migrations as a unit of work of a `Database` (used by `gateway migrate`, `serve`, tests).

A database already at the newest revision is recognised with two cheap reads, without importing Alembic:
that keeps `gateway serve` quick to start and its memory small (Alembic is ~9 MB once imported).
A database without any table is created from store/tables.py and stamped at the newest revision, as
Alembic's own docs suggest for new databases: the same schema the migrations build (a test compares the
two on SQLite and Postgres), in one step and without Alembic. Any other database is migrated by Alembic.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, Connection, MetaData, PrimaryKeyConstraint, String, Table, inspect, select

import gateway
from gateway.store.tables import metadata

if TYPE_CHECKING:
    from gateway.store.database import Database

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


def stored_revision(connection: Connection) -> str | None:
    """The revision recorded in the database, or None (empty database, no version table yet)."""
    if not inspect(connection).has_table(_VERSION.name):
        return None
    row = connection.execute(select(_VERSION.c.version_num)).first()
    return None if row is None else str(row[0])


def upgrade_unit(connection: Connection) -> None:
    """Bring the schema to the newest revision, in the caller's transaction (a unit of work)."""
    if stored_revision(connection) == head_revision():
        return
    if connection.dialect.name == "postgresql":
        # Several replicas may start at once: one migrates, the others wait for it and then find the
        # tables it made (Alembic then has nothing left to apply).
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7261002)")
    _create_or_upgrade(connection)


async def upgrade(db: Database) -> None:
    """Bring the database schema to the newest revision (idempotent; two cheap reads when already there)."""
    await db.run(upgrade_unit)


async def current_revision(db: Database) -> str | None:
    """Return the revision the database is at, or None for an empty database."""
    return await db.run(stored_revision)

"""Migrations: revision files follow their naming rule, and an up-to-date database is recognised cheaply."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from gateway import migrate
from gateway.store.database import Database, create_engine, open_database
from tests.helpers import fresh_python


def test_the_newest_file_number_is_alembics_single_head_and_each_file_holds_its_own_revision() -> None:
    config = Config()
    config.set_main_option("script_location", str(migrate.migrations_dir()))
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [migrate.head_revision()]
    for path in (migrate.migrations_dir() / "versions").glob("*.py"):
        revision = re.search(r'^revision = "(\w+)"', path.read_text(), re.MULTILINE)
        assert revision is not None and path.name.startswith(f"{revision.group(1)}_"), path.name


async def test_upgrade_records_the_head_and_a_second_upgrade_changes_nothing(
    empty_database_url: str,
) -> None:
    db = open_database(empty_database_url, lease_seconds=60, pool_size=1)
    try:
        await migrate.upgrade(db)
        assert await migrate.current_revision(db) == migrate.head_revision()
        await migrate.upgrade(db)  # the fast path: two reads, nothing applied
        assert await migrate.current_revision(db) == migrate.head_revision()
    finally:
        await db.close()


def test_an_sqlite_file_is_opened_without_alembic_or_sqlalchemys_asyncio_extension(tmp_path: Path) -> None:
    """A new database and one at the head: no Alembic (~9 MB), and on an SQLite file no async engine, so
    neither aiosqlite nor SQLAlchemy's asyncio extension and ORM (~7 MB) is loaded."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ready.db'}"
    script = (
        "import asyncio, sys\n"
        "from gateway import migrate\n"
        "from gateway.store.database import open_database\n"
        "async def main(url):\n"
        "    db = open_database(url, lease_seconds=60)\n"
        "    await migrate.upgrade(db)\n"
        "    assert await migrate.current_revision(db) == migrate.head_revision()\n"
        "    assert await db.ping()\n"
        "    await db.close()\n"
        "asyncio.run(main(sys.argv[1]))\n"
        "heavy = ('alembic', 'aiosqlite', 'sqlalchemy.orm', 'sqlalchemy.ext.asyncio')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    first = fresh_python(script, url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "[]"  # an empty database: created from tables.py, no Alembic
    second = fresh_python(script, url)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "[]"  # already at the head: two reads, no Alembic


async def test_a_database_behind_the_head_is_migrated_by_alembic(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    db = Database(engine, lease_seconds=60)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(functools.partial(migrate.run_alembic, revision="0006"))
        assert await migrate.current_revision(db) == "0006"
        await migrate.upgrade(db)  # tables exist: Alembic applies the later revisions
        assert await migrate.current_revision(db) == migrate.head_revision()
    finally:
        await db.close()
        await engine.dispose()

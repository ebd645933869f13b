"""Migrations: revision files follow their naming rule, and an up-to-date database is recognised cheaply."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from gateway import migrate
from gateway.store.database import create_engine
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
    engine = create_engine(empty_database_url)
    try:
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == migrate.head_revision()
        await migrate.upgrade(engine)  # the fast path: one query, nothing applied
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()


def test_a_new_database_and_one_at_the_head_are_opened_without_importing_alembic(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ready.db'}"
    script = (
        "import asyncio, sys\n"
        "from gateway import migrate\n"
        "from gateway.store.database import create_engine\n"
        "async def main(url):\n"
        "    engine = create_engine(url)\n"
        "    await migrate.upgrade(engine)\n"
        "    assert await migrate.current_revision(engine) == migrate.head_revision()\n"
        "    await engine.dispose()\n"
        "asyncio.run(main(sys.argv[1]))\n"
        "print('alembic' in sys.modules)\n"
    )
    first = fresh_python(script, url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "False"  # an empty database: created from tables.py, no Alembic
    second = fresh_python(script, url)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "False"  # already at the head: one query, no Alembic


async def test_a_database_behind_the_head_is_migrated_by_alembic(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(functools.partial(migrate.run_alembic, revision="0006"))
        assert await migrate.current_revision(engine) == "0006"
        await migrate.upgrade(engine)  # tables exist: Alembic applies the later revisions
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()

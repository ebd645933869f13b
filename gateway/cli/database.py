"""The CLI's one database opener: an engine and a Database for one command, closed when it is done."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
from sqlalchemy.engine import make_url

from gateway import migrate
from gateway.config import Settings
from gateway.store.database import Database, open_database

T = TypeVar("T")


def run_on_database(
    settings: Settings, work: Callable[[Database], Awaitable[T]], *, migrated: bool = False
) -> T:
    """Open the configured database (migrating it first when `migrated`), run `work(db)`, close it."""

    async def run() -> T:
        db = open_database(
            settings.database_url,
            lease_seconds=settings.lock_timeout + 60,
            pool_size=2,
            transaction_pooling=settings.db_transaction_pooling,
        )
        try:
            if migrated:
                await migrate.upgrade(db)
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


def require_sqlite_file(database_url: str) -> None:
    """Refuse a missing SQLite file (opening it would create an empty database)."""
    url = make_url(database_url)
    named_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if named_file and not Path(str(url.database)).is_file():
        raise click.ClickException(f"no gateway database at {url.database} (set GATEWAY_DATABASE_URL)")

"""The hot path's statements on the SQLite lane (straight on sqlite3) raise SQLAlchemy's errors, never
sqlite3's: callers inside the store catch SQLAlchemy's (an IntegrityError is a turn that lost a race)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError, StatementError

from gateway import migrate
from gateway.store import statements
from gateway.store.database import open_database
from gateway.store.tables import API_KEYS

KEY = {"name": "k", "secret_hash": "h" * 64, "budget_pusd": None, "created_at": 1.0, "revoked_at": None}


def raised(step: Callable[[Connection], object]) -> Callable[[Connection], BaseException | None]:
    """A unit that runs `step` and returns what it raised (the store's caller would see it as 503)."""

    def unit(connection: Connection) -> BaseException | None:
        try:
            step(connection)
        except Exception as exc:  # the test looks at its type
            return exc
        return None

    return unit


async def test_driver_errors_surface_as_sqlalchemy_errors_from_each_direct_statement(tmp_path: Path) -> None:
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'direct.db'}", lease_seconds=30)
    await migrate.upgrade(db)
    try:
        first = raised(lambda c: statements.insert_returning_key(c, insert(API_KEYS), KEY))
        assert await db.run(first) is None
        duplicates = [
            lambda c: statements.insert_returning_key(c, insert(API_KEYS), KEY),
            lambda c: statements.execute(c, insert(API_KEYS), [{**KEY, "name": "other"}]),
        ]
        for step in duplicates:
            error = await db.run(raised(step))
            assert isinstance(error, IntegrityError) and isinstance(error.orig, sqlite3.IntegrityError)
        lookup = select(API_KEYS.c.pk).where(API_KEYS.c.name == "x")
        unbindable = await db.run(raised(lambda c: statements.fetch(c, lookup, {"name_1": {}})))
        assert isinstance(unbindable, StatementError) and isinstance(unbindable.orig, sqlite3.Error)
        names = select(API_KEYS.c.name).order_by(API_KEYS.c.pk)
        assert await db.run(lambda c: statements.fetch(c, names, {})) == [("k",)]  # nothing else stored
    finally:
        await db.close()

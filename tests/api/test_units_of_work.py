"""Database.run, the hot path's units of work, on real databases (SQLite's lane thread; Postgres run_sync)."""

from __future__ import annotations

import dataclasses
import functools
import secrets
import threading
from collections.abc import AsyncIterator
from typing import cast

import pytest
from sqlalchemy import Connection, select, text

from gateway import migrate
from gateway.errors import DatabaseUnavailable
from gateway.history import Budget, number_messages
from gateway.store.conversations import LoadedTurn, TurnWrite, load_turn_state, write_turn
from gateway.store.database import Database, open_database
from gateway.store.tables import ATTEMPTS
from gateway.store.usage import insert_attempt
from tests.helpers import logged_call, migrated_database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated_database(database_url) as database:
        yield database


def turn(owner: str, conversation_id: str, texts: list[str], start: int = 0, tokens: int = 0) -> TurnWrite:
    bodies = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    numbered = number_messages(
        bodies, [5] * len(bodies), next_seq=start, token_total=tokens, last_user_seq=0, last_user_tokens=0
    )
    return TurnWrite(owner, conversation_id, None, False, numbered, start // 2 + 1, f"digest-{start}", 1.0)


async def count_attempts(db: Database, owner: str) -> int:
    rows = await db.run(lambda c: c.execute(select(ATTEMPTS.c.pk).where(ATTEMPTS.c.owner == owner)).all())
    return len(rows)


async def test_a_unit_commits_what_it_wrote(db: Database) -> None:
    owner = secrets.token_hex(32)
    await db.run(functools.partial(insert_attempt, record=logged_call(owner)))
    # Visible through the async engine's own connections (on SQLite: another connection to the file).
    assert await count_attempts(db, owner) == 1


async def test_a_failing_unit_writes_nothing(db: Database) -> None:
    owner = secrets.token_hex(32)

    def unit(connection: Connection) -> None:
        insert_attempt(connection, logged_call(owner))
        raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError):
        await db.run(unit)
    assert await count_attempts(db, owner) == 0


async def test_a_database_error_is_unavailable(db: Database) -> None:
    def unit(connection: Connection) -> None:
        connection.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(DatabaseUnavailable):
        await db.run(unit)
    # The lane (or pool) still works after the failed unit.
    owner = secrets.token_hex(32)
    await db.run(functools.partial(insert_attempt, record=logged_call(owner)))
    assert await count_attempts(db, owner) == 1


async def test_a_constraint_violation_is_unavailable_and_rolls_back(db: Database) -> None:
    owner = secrets.token_hex(32)
    incomplete = dataclasses.replace(logged_call(owner), request_id=cast(str, None))

    def unit(connection: Connection) -> None:
        insert_attempt(connection, logged_call(owner))
        insert_attempt(connection, incomplete)  # request_id is NOT NULL

    with pytest.raises(DatabaseUnavailable):
        await db.run(unit)
    assert await count_attempts(db, owner) == 0


async def test_a_turn_round_trips_through_load_turn_state(db: Database) -> None:
    owner, conversation_id = secrets.token_hex(32), "conv-1"
    unit = functools.partial(
        load_turn_state,
        owner=owner,
        conversation_id=conversation_id,
        budget_for=lambda c: Budget(),
        anchored=lambda c: False,
    )
    assert await db.run(unit) == LoadedTurn(None, [])

    def store(connection: Connection, write: TurnWrite) -> None:
        write_turn(connection, None, write)
        insert_attempt(connection, logged_call(owner, conversation_id))

    await db.run(functools.partial(store, write=turn(owner, conversation_id, ["a", "b", "c", "d"])))
    loaded = await db.run(unit)
    conversation, window = loaded.conversation, loaded.candidates
    assert conversation is not None
    assert (conversation.message_count, conversation.token_count, conversation.turn_count) == (4, 20, 1)
    assert [m.body["content"] for m in window] == ["a", "b", "c", "d"]

    second = turn(owner, conversation_id, ["e", "f"], start=4, tokens=20)
    await db.run(lambda connection: write_turn(connection, conversation, second))
    budgeted = functools.partial(unit, budget_for=lambda c: Budget(max_messages=2))
    loaded = await db.run(budgeted)
    conversation, window = loaded.conversation, loaded.candidates
    assert conversation is not None and conversation.message_count == 6
    assert [m.body["content"] for m in window] == ["e", "f"]


async def test_close_stops_the_sqlite_thread(database_url: str) -> None:
    database = open_database(database_url, lease_seconds=60, pool_size=2)
    await migrate.upgrade(database)
    await database.run(lambda connection: connection.execute(text("SELECT 1")).scalar())
    await database.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("gateway-sqlite")]

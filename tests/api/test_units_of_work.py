"""Database.run, the hot path's units of work, on real databases (SQLite's lane thread; Postgres run_sync)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from sqlalchemy import Connection, event, select, text
from sqlalchemy.engine import make_url

from gateway import migrate
from gateway.errors import DatabaseUnavailable
from gateway.history import Budget, BudgetRule, number_messages
from gateway.store.conversations import LoadedTurn, TurnWrite, load_turn_state, write_turn
from gateway.store.database import Database, open_database
from gateway.store.lane import SqliteLane
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


async def assert_a_unit_commits(db: Database) -> None:
    """A unit that writes a row commits it (after a failure: the lane or pool was left usable)."""
    owner = secrets.token_hex(32)
    await db.run(functools.partial(insert_attempt, record=logged_call(owner)))
    assert await count_attempts(db, owner) == 1


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
    await assert_a_unit_commits(db)  # the lane (or pool) still works after the failed unit


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


# Group commit on the SQLite lane: units that queue up behind a busy lane run as one batch and commit once.


@pytest.fixture
def lane_url(tmp_path: Path, sqlite_template: Path) -> str:
    shutil.copyfile(sqlite_template, tmp_path / "gateway.db")
    return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
async def lane_db(lane_url: str) -> AsyncIterator[Database]:
    async with migrated_database(lane_url) as database:
        yield database


async def queued_behind_a_busy_lane(db: Database, units: list[Callable[[Connection], Any]]) -> list[Any]:
    """Run `units` as one batch: the lane is held busy until all of them are queued behind it.

    Returns each unit's result or the exception it ended with, and counts the lane's commits meanwhile.
    """
    gate = threading.Event()
    blocker = asyncio.ensure_future(db.run(lambda _connection: gate.wait(10)))
    await asyncio.sleep(0.05)  # the blocker is running on the lane's thread
    waiting = [asyncio.ensure_future(db.run(unit)) for unit in units]
    await asyncio.sleep(0.05)  # every unit is queued
    gate.set()
    await blocker
    return list(await asyncio.gather(*waiting, return_exceptions=True))


def commits_of(db: Database) -> list[int]:
    """A list that grows by one at each commit of the lane's connection."""
    commits: list[int] = []
    lane = db._lane  # the lane exists once a unit has run
    assert lane is not None
    event.listen(lane._engine, "commit", lambda _connection: commits.append(1))
    return commits


async def test_queued_units_commit_together_and_each_keeps_its_outcome(lane_db: Database) -> None:
    owners = [secrets.token_hex(32) for _ in range(4)]
    await count_attempts(lane_db, owners[0])  # the lane is up
    commits = commits_of(lane_db)

    def failing(connection: Connection) -> None:
        insert_attempt(connection, logged_call(owners[2]))
        raise RuntimeError("after the insert")

    units: list[Callable[[Connection], Any]] = [
        functools.partial(insert_attempt, record=logged_call(owners[0])),
        functools.partial(insert_attempt, record=logged_call(owners[1])),
        failing,
        lambda connection: connection.execute(text("SELECT 7")).scalar_one(),
        functools.partial(insert_attempt, record=logged_call(owners[3])),
    ]
    outcomes = await queued_behind_a_busy_lane(lane_db, units)

    assert isinstance(outcomes[2], RuntimeError)
    assert outcomes[3] == 7
    assert len(commits) == 2  # the blocker's transaction, then the batch's one commit
    counts = [await count_attempts(lane_db, owner) for owner in owners]
    assert counts == [1, 1, 0, 1]  # the failing unit's insert was rolled back, alone


async def test_units_queued_in_one_pass_of_the_event_loop_go_to_the_lane_together(lane_db: Database) -> None:
    """The lane's thread gets the queue once the event loop's pass is over, not at the first unit: the turns
    that one pass wakes (other conversations') share a hand-off and a commit, even when the event loop's
    thread lets the GIL go between them (handed over at once, the thread took the first unit alone)."""
    owners = [secrets.token_hex(32) for _ in range(3)]
    await count_attempts(lane_db, owners[0])  # the lane is up, and idle
    commits = commits_of(lane_db)

    async def queued(owner: str) -> None:
        time.sleep(0.02)  # noqa: ASYNC251 - the GIL let go between two tasks of the same pass
        await lane_db.run(functools.partial(insert_attempt, record=logged_call(owner)))

    await asyncio.gather(*(queued(owner) for owner in owners))

    assert len(commits) == 1
    assert [await count_attempts(lane_db, owner) for owner in owners] == [1, 1, 1]


def test_a_hand_over_left_pending_by_a_closed_event_loop_does_not_stop_the_lane(lane_url: str) -> None:
    owner = secrets.token_hex(32)
    database = open_database(lane_url, lease_seconds=5)
    closed = asyncio.new_event_loop()
    stranded = closed.create_task(database.run(functools.partial(insert_attempt, record=logged_call(owner))))
    closed.call_soon(closed.stop)  # the task queues its unit; the loop stops before the hand-over runs
    closed.run_forever()
    stranded.cancel()
    closed.close()

    async def still_served() -> int:
        try:
            await asyncio.wait_for(assert_a_unit_commits(database), timeout=10)
            return await count_attempts(database, owner)
        finally:
            await database.close()

    assert asyncio.run(still_served()) == 0  # its caller was cancelled: the stranded unit was dropped unrun


async def test_a_unit_sent_to_a_closed_lane_gets_an_error(lane_url: str) -> None:
    lane = SqliteLane(make_url(lane_url), lambda *_: None)
    assert await lane.run(lambda connection: connection.execute(text("SELECT 3")).scalar_one()) == 3
    await lane.close()
    with pytest.raises(RuntimeError):  # the executor's own "cannot schedule new futures after shutdown"
        await asyncio.wait_for(lane.run(lambda connection: connection.execute(text("SELECT 4"))), timeout=10)


async def test_the_lane_keeps_its_statement_journals_in_memory(lane_db: Database) -> None:
    """A batch gives each unit a savepoint, whose statement journal would otherwise be a temporary file
    written page by page (two system calls each)."""
    assert await lane_db.run(lambda connection: connection.exec_driver_sql("PRAGMA temp_store").scalar()) == 2


async def test_leaving_a_turn_on_sqlite_never_waits(lane_db: Database) -> None:
    """`open_turn`'s exit on SQLite only releases the in-process lock, without suspending: a cancelled task
    runs it to the end unshielded, and the conversation is free again (`Database.turn_exit_waits`, which lets
    `TurnLease` skip its shield)."""
    assert not lane_db.turn_exit_waits
    rule = BudgetRule(header=Budget(None, None), default=Budget(None, None))
    turn_context = lane_db.open_turn("owner", "conversation", wait=1, budget=rule)
    await turn_context.__aenter__()

    async def next_turn() -> float:
        async with lane_db.open_turn("owner", "conversation", wait=2, budget=rule) as opened:
            return opened.waited

    queued = asyncio.ensure_future(next_turn())
    await asyncio.sleep(0.05)  # the next turn waits for the first
    with anyio.CancelScope() as scope:
        scope.cancel()
        await turn_context.__aexit__(None, None, None)
    assert await queued < 1  # it got the conversation when the first hold ended, not at its timeout


def break_the_commit(connection: Connection) -> None:
    """A unit that succeeds but whose transaction cannot commit: a foreign key checked only at COMMIT."""
    connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    connection.exec_driver_sql(
        "INSERT INTO messages (conversation_pk, seq, turn, role, body, tokens, turn_start_seq, "
        "turn_start_tokens, created_at) VALUES (999999999, 0, 1, 'user', '{}', 1, 0, 0, 0)"
    )


async def test_a_unit_whose_commit_fails_leaves_no_transaction_open(lane_db: Database) -> None:
    # SQLite keeps a transaction open when it refuses its COMMIT: the next unit must not run inside it.
    with pytest.raises(DatabaseUnavailable):
        await lane_db.run(break_the_commit)
    await assert_a_unit_commits(lane_db)


async def test_a_batch_whose_commit_fails_stores_nothing_and_fails_every_unit(lane_db: Database) -> None:
    owners = [secrets.token_hex(32) for _ in range(2)]
    await count_attempts(lane_db, owners[0])

    units: list[Callable[[Connection], Any]] = [
        functools.partial(insert_attempt, record=logged_call(owners[0])),
        break_the_commit,
        functools.partial(insert_attempt, record=logged_call(owners[1])),
    ]
    outcomes = await queued_behind_a_busy_lane(lane_db, units)

    assert all(isinstance(outcome, DatabaseUnavailable) for outcome in outcomes), outcomes
    assert [await count_attempts(lane_db, owner) for owner in owners] == [0, 0]
    await assert_a_unit_commits(lane_db)  # the lane goes on: a unit alone commits as before


async def test_a_caller_that_stopped_waiting_before_its_unit_ran_leaves_it_unrun(lane_db: Database) -> None:
    owner = secrets.token_hex(32)
    await count_attempts(lane_db, owner)
    gate = threading.Event()
    blocker = asyncio.ensure_future(lane_db.run(lambda _connection: gate.wait(10)))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(lane_db.run(functools.partial(insert_attempt, record=logged_call(owner))))
    await asyncio.sleep(0.05)
    queued.cancel()
    gate.set()
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await count_attempts(lane_db, owner) == 0


async def test_a_database_the_lane_cannot_open_is_unavailable_every_time(tmp_path: Path) -> None:
    database = open_database(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'gateway.db'}", lease_seconds=5)
    try:
        for _ in range(2):  # the lane still answers after a failed connect (it did not stop draining)
            with pytest.raises(DatabaseUnavailable):
                await asyncio.wait_for(database.run(lambda c: c.execute(text("SELECT 1"))), timeout=10)
    finally:
        await database.close()

"""The indexed history query (read_window) against the pure reference (trim_history), on a real database."""

from __future__ import annotations

import asyncio
import functools
import itertools
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from gateway import migrate
from gateway.history import Budget, StoredMessage, number_messages, select_window, trim_history
from gateway.store.conversations import TurnWrite, get_conversation, read_window, window_query, write_turn
from gateway.store.database import Database, open_database
from gateway.store.tables import Conversation
from tests.history_strategies import budgets, stored_histories


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the module: the engine's connections belong to it."""
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture(scope="module")
def db(database_url: str, runner: asyncio.Runner) -> Iterator[Database]:
    """A migrated database of each backend."""
    database = open_database(database_url, lease_seconds=60, pool_size=2)
    runner.run(migrate.upgrade(database))
    yield database
    runner.run(database.close())  # its SQLite lane thread, its engine


async def read_conversation(db: Database, owner: str, conversation_id: str) -> Conversation | None:
    return await db.run(functools.partial(get_conversation, owner=owner, conversation_id=conversation_id))


async def store_in_turns(db: Database, owner: str, stored: list[StoredMessage], cuts: list[int]) -> str:
    """Store a history the way turns do: in pieces, each numbered from the conversation's running state."""
    conversation_id = "c-" + secrets.token_hex(6)
    bounds = sorted({0, len(stored), *(c for c in cuts if 0 < c < len(stored))})
    for turn, (start, end) in enumerate(itertools.pairwise(bounds), start=1):
        bodies = [m.body for m in stored[start:end]]
        conversation = await read_conversation(db, owner, conversation_id)
        numbered = number_messages(
            bodies,
            [m.tokens for m in stored[start:end]],
            next_seq=conversation.message_count if conversation else 0,
            token_total=conversation.token_count if conversation else 0,
            last_user_seq=conversation.last_user_seq if conversation else 0,
            last_user_tokens=conversation.last_user_tokens if conversation else 0,
        )
        assert numbered == stored[start:end]  # the running state continues the numbering exactly
        write = TurnWrite(owner, conversation_id, None, False, numbered, turn, "", float(turn))
        await db.run(lambda c, conversation=conversation, write=write: write_turn(c, conversation, write))
    return conversation_id


def drawn_case(stored: list[StoredMessage], data: st.DataObject) -> tuple[list[int], list[Budget]]:
    """Where a history is cut into turns, and the budgets tried on it."""
    cuts = data.draw(st.lists(st.integers(0, len(stored)), max_size=4))
    tried = data.draw(st.lists(budgets(len(stored), sum(m.tokens for m in stored)), min_size=1, max_size=6))
    return cuts, tried


async def stored_conversation(
    db: Database, stored: list[StoredMessage], cuts: list[int]
) -> Conversation | None:
    """The history stored in turns (cut at `cuts`) as a new caller's conversation, read back."""
    owner = "owner-" + secrets.token_hex(4)
    conversation_id = await store_in_turns(db, owner, stored, cuts)
    return await read_conversation(db, owner, conversation_id)


def prefix_length(stored: list[StoredMessage]) -> int:
    """How many messages come before the first user message (they belong to no turn)."""
    return next((i for i, m in enumerate(stored) if m.body["role"] == "user"), len(stored))


@settings(max_examples=40, deadline=None)
@given(stored=stored_histories(), data=st.data())
def test_read_window_equals_trim_history(
    db: Database, runner: asyncio.Runner, stored: list[StoredMessage], data: st.DataObject
) -> None:
    cuts, tried = drawn_case(stored, data)

    async def check() -> None:
        conversation = await stored_conversation(db, stored, cuts)
        assert conversation is not None or not stored
        for budget in tried:
            expected = trim_history(stored, budget)
            if conversation is None:
                assert expected == []
                continue
            candidates = await db.run(lambda c, budget=budget: read_window(c, conversation, budget))
            window = select_window(candidates, budget, conversation.message_count, conversation.token_count)
            assert window == expected
            # reads only what is needed: the window, plus a turn's messages that do not fit or the
            # messages before the first user message (only when no limit binds)
            extra = len(candidates) - len(window)
            assert candidates[extra:] == window
            assert extra <= max(prefix_length(stored), _largest_turn(stored)), (budget, extra)

    runner.run(check())


def _largest_turn(stored: list[StoredMessage]) -> int:
    sizes: dict[int, int] = {}
    for m in stored:
        sizes[m.turn_start_seq] = sizes.get(m.turn_start_seq, 0) + 1
    return max(sizes.values(), default=0)


def test_window_query_is_one_range_read_of_the_seq_index(
    db: Database, runner: asyncio.Runner, database_url: str
) -> None:
    """SQLite's plan: a search of the (conversation, seq) index from the bound, never a scan of messages."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the plan check reads SQLite's EXPLAIN QUERY PLAN")
    bodies: list[dict[str, Any]] = []
    for i in range(300):
        bodies += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    stored = number_messages(
        bodies, [10] * len(bodies), next_seq=0, token_total=0, last_user_seq=0, last_user_tokens=0
    )

    async def plans() -> list[str]:
        owner = "plan-" + secrets.token_hex(4)
        conversation_id = await store_in_turns(db, owner, stored, [])
        found = []
        conversation = await read_conversation(db, owner, conversation_id)
        assert conversation is not None
        for budget in (Budget(max_messages=10), Budget(max_tokens=100), Budget(10, 100)):
            statement = window_query(conversation, budget)
            assert statement is not None
            sql = str(statement.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}))
            plan = await db.run(lambda c, sql=sql: c.execute(text("EXPLAIN QUERY PLAN " + sql)).all())
            found.append(" | ".join(str(row[-1]) for row in plan))
            assert len(await db.run(lambda c, budget=budget: read_window(c, conversation, budget))) == 10
        return found

    for plan in runner.run(plans()):
        assert "SCAN messages" not in plan, plan
        # the unique (conversation_pk, seq) constraint is SQLite's autoindex on messages
        assert plan.startswith(
            "SEARCH messages USING INDEX sqlite_autoindex_messages_1 (conversation_pk=? AND seq>?)"
        )

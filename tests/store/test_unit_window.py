"""The hot path's window read (a unit of work: on SQLite the lane's own sqlite3) equals a fresh read's."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from gateway.history import BudgetRule
from gateway.store.conversations import conversation_budget, get_conversation, read_window
from gateway.store.database import Database
from tests.helpers import load_state, migrated_database
from tests.store.test_take import RULES, store_turns


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated_database(database_url, lease_seconds=30) as database:
        yield database


@pytest.mark.parametrize("rule", RULES, ids=repr)
async def test_the_unit_of_work_reads_the_same_window(db: Database, rule: BudgetRule) -> None:
    owner, conversation_id = secrets.token_hex(8), "window"
    await store_turns(db, owner, conversation_id, 8)
    loaded = await load_state(db, owner, conversation_id, rule)
    conversation, window = loaded.conversation, loaded.candidates
    assert conversation is not None
    same = await db.run(lambda c: get_conversation(c, owner, conversation_id))
    assert same is not None
    expected = await db.run(lambda c: read_window(c, same, conversation_budget(rule, same)))
    assert [(m.seq, m.json, m.role) for m in window] == [(m.seq, m.json, m.role) for m in expected]
    assert [m.body for m in window] == [m.body for m in expected]

"""Postgres' lease statement: takes the lease and reads the window the generic read reads, in one go."""

from __future__ import annotations

import functools
import json
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Connection, text

from gateway.history import Budget, BudgetRule, number_messages
from gateway.store.conversations import TurnWrite, conversation_budget, load_turn_state, write_turn
from gateway.store.database import Database
from gateway.store.postgres import TAKE, parse_take, read_is_enough
from gateway.store.tables import CONVERSATIONS
from tests.conftest import POSTGRES_ENV
from tests.helpers import load_state, logged_call, migrated_database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"set {POSTGRES_ENV} to run"),
]


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Database]:
    async with migrated_database(postgres_url, lease_seconds=30) as database:
        yield database


async def take(db: Database, owner: str, conversation_id: str, holder: str, rule: BudgetRule) -> Any:
    """Run the TAKE statement once."""
    assert db.leases is not None
    arguments = (
        rule.header.max_messages,
        rule.header.max_tokens,
        rule.default.max_messages,
        rule.default.max_tokens,
    )
    return await db.leases.fetchrow(
        TAKE, owner, conversation_id, holder, 30.0, *arguments, 0, idempotent=True
    )


async def store_turns(db: Database, owner: str, conversation_id: str, turns: int) -> None:
    """Store `turns` user/assistant turns of varied sizes, one write each."""
    conversation = None
    for turn in range(1, turns + 1):
        bodies = [
            {"role": "user", "content": "q" * turn},
            {"role": "assistant", "content": "a " * (3 * turn)},
        ]
        numbered = number_messages(
            bodies,
            [4 + turn, 4 + 3 * turn],
            next_seq=conversation.message_count if conversation else 0,
            token_total=conversation.token_count if conversation else 0,
            last_user_seq=conversation.last_user_seq if conversation else 0,
            last_user_tokens=conversation.last_user_tokens if conversation else 0,
        )
        write = TurnWrite(owner, conversation_id, None, False, numbered, turn, f"d{turn}", 1.0)
        await db.run(functools.partial(write_turn, conversation=conversation, write=write))
        loaded = await db.run(
            functools.partial(
                load_turn_state,
                owner=owner,
                conversation_id=conversation_id,
                budget_for=lambda c: Budget(),
                anchored=lambda c: False,
            )
        )
        conversation = loaded.conversation


RULES = [
    BudgetRule(),
    BudgetRule(header=Budget(max_messages=4)),
    BudgetRule(header=Budget(max_tokens=40)),
    BudgetRule(header=Budget(max_messages=6, max_tokens=55)),
    BudgetRule(default=Budget(max_messages=3)),
    BudgetRule(header=Budget(max_messages=0)),
    BudgetRule(header=Budget(max_tokens=1)),
]


@pytest.mark.parametrize("rule", RULES, ids=repr)
async def test_the_statement_reads_what_the_generic_read_reads(db: Database, rule: BudgetRule) -> None:
    owner, conversation_id = secrets.token_hex(8), "window"
    await store_turns(db, owner, conversation_id, 8)
    holder = secrets.token_hex(16)
    row = await take(db, owner, conversation_id, holder, rule)
    taken, current, conversation, candidates = parse_take(row, holder)
    assert taken and current and conversation is not None
    assert read_is_enough(row, conversation_budget(rule, conversation), conversation)
    loaded = await load_state(db, owner, conversation_id, rule)
    expected_conversation, expected = loaded.conversation, loaded.candidates
    assert (
        expected_conversation is not None
        and conversation.message_count == expected_conversation.message_count
    )
    assert [(m.seq, m.json, m.role, m.tokens) for m in candidates] == [
        (m.seq, m.json, m.role, m.tokens) for m in expected
    ]


async def test_a_conversation_setting_the_statement_did_not_expect_is_read_again(db: Database) -> None:
    owner, conversation_id = secrets.token_hex(8), "setting"
    await store_turns(db, owner, conversation_id, 4)
    holder = secrets.token_hex(16)
    row = await take(db, owner, conversation_id, holder, BudgetRule(header=Budget(max_messages=2)))
    _, _, conversation, _ = parse_take(row, holder)
    assert conversation is not None
    # a rule that asks for more than the statement read: not enough, so the caller reads again
    assert not read_is_enough(row, Budget(max_messages=6), conversation)


async def test_the_lease_is_exclusive_idempotent_and_taken_over_when_expired(db: Database) -> None:
    owner, conversation_id = secrets.token_hex(8), "lease"
    first, second = secrets.token_hex(16), secrets.token_hex(16)
    row = await take(db, owner, conversation_id, first, BudgetRule())
    assert parse_take(row, first)[:2] == (True, True)
    assert parse_take(await take(db, owner, conversation_id, first, BudgetRule()), first)[:2] == (True, True)
    assert not parse_take(await take(db, owner, conversation_id, second, BudgetRule()), second)[0]
    expire = text("UPDATE conversation_leases SET expires_at = 0 WHERE owner = :owner")
    await db.run(lambda c: c.execute(expire, {"owner": owner}))  # the first holder's lease runs out
    taken, current, _, _ = parse_take(await take(db, owner, conversation_id, second, BudgetRule()), second)
    # taken over, but the statement's snapshot saw the other holder's lease: its read must be done again
    assert taken and not current


async def test_open_turn_stores_and_releases_in_one_write(db: Database) -> None:
    owner, conversation_id = secrets.token_hex(8), "open"
    rule = BudgetRule()
    for turn in (1, 2):
        async with db.open_turn(owner, conversation_id, wait=5, budget=rule) as opened:
            start = opened.conversation.message_count if opened.conversation else 0
            bodies = [{"role": "user", "content": f"u{turn}"}, {"role": "assistant", "content": f"a{turn}"}]
            numbered = number_messages(
                bodies, [5, 5], next_seq=start, token_total=5 * start, last_user_seq=0, last_user_tokens=0
            )
            attempt = logged_call(owner, conversation_id, request_id=f"r{turn}", model=None)
            write = TurnWrite(owner, conversation_id, None, False, numbered, turn, f"d{turn}", 1.0)
            await opened.store(write, attempt)
            assert opened.lease is not None and opened.lease.released

    def count(connection: Connection, table: str) -> int:
        return int(
            connection.execute(
                text(f"SELECT count(*) FROM {table} WHERE owner = :o"), {"o": owner}
            ).scalar_one()
        )

    leases = await db.run(functools.partial(count, table="conversation_leases"))
    attempts = await db.run(functools.partial(count, table="attempts"))
    assert (leases, attempts) == (0, 2)
    loaded = await load_state(db, owner, conversation_id, rule)
    conversation, window = loaded.conversation, loaded.candidates
    assert conversation is not None and conversation.turn_count == 2
    assert [m.body["content"] for m in window] == ["u1", "a1", "u2", "a2"]


async def blocks_read(db: Database, owner: str, conversation_id: str, rule: BudgetRule) -> int:
    """The buffer blocks one TAKE of the conversation touches (EXPLAIN ANALYZE); its lease is released."""
    assert db.leases is not None
    arguments = (rule.header.max_messages, rule.header.max_tokens, rule.default.max_messages)
    explain = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {TAKE}"
    row = await db.leases.fetchrow(
        explain, owner, conversation_id, secrets.token_hex(16), 30.0, *arguments, None, 0, idempotent=True
    )
    assert row is not None
    document = row[0]  # json, decoded by the driver or not
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    await db.run(lambda c: c.execute(text("DELETE FROM conversation_leases")))
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


async def test_a_long_conversations_turn_reads_no_more_than_a_short_ones(db: Database) -> None:
    # The window is a range of the (conversation, seq) index: a turn reads its window, not the conversation.
    owner = secrets.token_hex(8)
    await store_turns(db, owner, "short", 10)
    await store_turns(db, owner, "long", 400)
    await db.run(lambda c: c.execute(text("ANALYZE messages")))
    rule = BudgetRule(header=Budget(max_messages=20))
    short = await blocks_read(db, owner, "short", rule)
    long = await blocks_read(db, owner, "long", rule)
    assert long <= short + 10, (short, long)


@pytest.mark.parametrize("limit", [0, 10_000], ids=["no conversation limit", "limit"])
async def test_the_statement_keeps_a_generic_plan_for_a_caller_with_many_conversations(
    db: Database, postgres_url: str, limit: int
) -> None:
    # Postgres plans a prepared statement anew at every execution when its generic plan looks costlier than
    # the plans made for the actual values; the caller's conversation count once made it so (tables.py).
    owner = secrets.token_hex(8)
    await store_turns(db, owner, "first", 2)
    columns = ", ".join(c.name for c in CONVERSATIONS.columns if c.name not in ("pk", "id"))
    copies = text(
        f"INSERT INTO conversations (id, {columns}) SELECT 'copy-' || g, {columns} "
        "FROM conversations, generate_series(1, 20000) AS g WHERE owner = :owner AND id = 'first'"
    )
    await db.run(lambda c: c.execute(copies, {"owner": owner}))
    await db.run(lambda c: c.execute(text("ANALYZE conversations")))
    connection = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        statement = await connection.prepare(TAKE)
        for _ in range(10):  # Postgres decides after five executions
            holder = secrets.token_hex(16)
            await statement.fetchrow(owner, "first", holder, 30.0, 20, None, None, None, limit)
            await connection.execute("DELETE FROM conversation_leases WHERE holder = $1", holder)
        plans = await connection.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", TAKE
        )
    finally:
        await connection.close()
    assert plans is not None and plans["generic_plans"] >= 5, dict(plans or {})

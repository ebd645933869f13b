"""Postgres plans of the conversations table: a lookup by (owner, id) and a listing each use their index,
whatever the statistics (a generic plan is made once per connection, possibly on a small table)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Connection, event

from gateway.store.conversations import list_conversations
from gateway.store.postgres import TAKE
from tests.conftest import POSTGRES_ENV, create_postgres_database, drop_postgres_database
from tests.helpers import migrated_database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"set {POSTGRES_ENV} to run"),
]

CONVERSATIONS_OF = (
    "INSERT INTO conversations (owner, id, message_count, token_count, turn_count, history_hash,"
    " last_user_seq, last_user_tokens, created_at, updated_at)"
    " SELECT $1, 'c-' || g, 0, 0, 0, '', 0, 0, g, g FROM generate_series(1, $2::int) AS g"
)


def _scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    return [plan, *(node for child in plan.get("Plans", ()) for node in _scans(child))]


@pytest.fixture
def fresh_url() -> Iterator[str]:
    """A migrated database of the test's own (its tables never analyzed)."""
    url = create_postgres_database(migrated=True)
    try:
        yield url
    finally:
        drop_postgres_database(url)


async def test_a_plan_made_on_an_empty_table_finds_a_conversation_by_its_unique_index(fresh_url: str) -> None:
    # A prepared statement's generic plan lives as long as its connection, and nothing replans it while the
    # tables grow until they are analyzed (autovacuum off, or before its first ANALYZE). Planned on an
    # empty table, the two indexes that start with `owner` cost the same; the (owner, updated_at) one was
    # picked and then walked every conversation of the caller on each turn (2.5 ms at 4,400).
    connection = await asyncpg.connect(fresh_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute("ALTER TABLE conversations SET (autovacuum_enabled = false)")
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE take AS {TAKE}")
        arguments = "'owner', '{id}', 'holder', 30, 20, NULL, NULL, NULL, 0"
        await connection.execute(f"EXECUTE take({arguments.format(id='c-0')})")  # the plan, made now
        await connection.execute(CONVERSATIONS_OF, "owner", 3000)
        await connection.execute("DELETE FROM conversation_leases")
        document = await connection.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE take({arguments.format(id='c-1500')})"
        )
    finally:
        await connection.close()
    plan = json.loads(document)[0]["Plan"]
    found = [node for node in _scans(plan) if node.get("Relation Name") == "conversations"]
    assert [node.get("Index Name") for node in found] == ["uq_conversations_owner_id"], found
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 40, plan["Shared Hit Blocks"]


def _captured_explain(connection: Connection, owner: str) -> Any:
    """The plan of the statement `list_conversations` runs (captured as sent, then explained)."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", capture)
    try:
        list_conversations(connection, owner, limit=20)
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    statement, parameters = sent[0]
    return connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar_one()


async def test_a_listing_of_a_callers_conversations_reads_the_listing_index(fresh_url: str) -> None:
    # The index is partial (updated_at > 0); a listing that did not state it would sort every conversation.
    connection = await asyncpg.connect(fresh_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for owner in ("a", "b", "c"):
            await connection.execute(CONVERSATIONS_OF, owner, 3000)
        await connection.execute("ANALYZE conversations")
    finally:
        await connection.close()
    async with migrated_database(fresh_url) as db:
        document = await db.run(lambda c: _captured_explain(c, "b"))
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    scans = [node for node in _scans(plan) if node.get("Relation Name") == "conversations"]
    indexes = [node.get("Index Name") for node in scans]
    assert indexes == ["ix_conversations_owner_updated"], plan

"""Postgres plans of the hot lookups (conversations, responses, a conversation's spend): each uses its index,
whatever the statistics (a generic plan is made once per connection, possibly on a small table)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Connection, event

from gateway.store.conversations import list_conversations
from gateway.store.postgres import TAKE
from gateway.store.responses import find_retried, find_turn_response
from gateway.store.spend import conversation_spent_pusd
from gateway.store.usage import UsageQuery, usage_groups
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
    async def grow(connection: Any) -> None:
        await connection.execute(CONVERSATIONS_OF, "owner", 3000)
        await connection.execute("DELETE FROM conversation_leases")

    arguments = ["owner", "c-0", "holder", 30, 20, None, None, None, 0]
    later = ["owner", "c-1500", *arguments[2:]]
    _, document = await _planned_empty(fresh_url, "conversations", TAKE, arguments, grow, later)
    plan = json.loads(document)[0]["Plan"]
    found = [node for node in _scans(plan) if node.get("Relation Name") == "conversations"]
    assert [node.get("Index Name") for node in found] == ["uq_conversations_owner_id"], found
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 40, plan["Shared Hit Blocks"]


def _captured(connection: Connection, call: Callable[[Connection], Any]) -> tuple[str, Any]:
    """The first statement `call` runs and its parameters, as sent to the driver."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", capture)
    try:
        call(connection)
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    return sent[0]


def _captured_explain(connection: Connection, call: Callable[[Connection], Any]) -> Any:
    """The plan of the first statement `call` runs (captured as sent, then explained)."""
    statement, parameters = _captured(connection, call)
    return connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar_one()


def _indexes(document: Any, table: str) -> list[str | None]:
    """The index each scan of `table` in an EXPLAIN (FORMAT JSON) document reads (None: no index)."""
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    return [node.get("Index Name") for node in _scans(plan) if node.get("Relation Name") == table]


async def _filled(url: str, insert: str, rows: int, table: str) -> None:
    """`rows` rows of `insert` for each of three callers, then ANALYZE `table` (plans with statistics)."""
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for owner in ("a", "b", "c"):
            await connection.execute(insert, owner, rows)
        await connection.execute(f"ANALYZE {table}")
    finally:
        await connection.close()


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else repr(value)


def _literals(values: Any) -> str:
    """`values` written as SQL literals, for EXECUTE (a generic plan cannot use their values anyway)."""
    return ", ".join(_literal(value) for value in values)


async def _planned_empty(
    url: str, table: str, statement: str, first: Any, grow: Callable[[Any], Awaitable[object]], later: Any
) -> tuple[list[Any], str]:
    """`statement` prepared and run with `first` while `table` is empty (its generic plan made then, and never
    replanned: autovacuum off), `grow` run, then EXPLAIN ANALYZE of the same plan with `later`.

    Returns the first run's rows and the plan (FORMAT JSON)."""
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        prepared = await connection.prepare(statement)  # (kept: the driver closes it once collected)
        rows = list(await prepared.fetch(*first))  # the plan, made now
        await grow(connection)
        document = await connection.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {prepared.get_name()}({_literals(later)})"
        )
    finally:
        await connection.close()
    return rows, document


async def test_a_listing_of_a_callers_conversations_reads_the_listing_index(fresh_url: str) -> None:
    # The index is partial (updated_at > 0); a listing that did not state it would sort every conversation.
    await _filled(fresh_url, CONVERSATIONS_OF, 3000, "conversations")
    async with migrated_database(fresh_url) as db:
        listing = functools.partial(list_conversations, owner="b", limit=20)
        document = await db.run(lambda c: _captured_explain(c, listing))
    assert _indexes(document, "conversations") == ["ix_conversations_owner_updated"], document


RESPONSES_OF = (
    "INSERT INTO responses (owner, id, conversation_id, turn, message_end, request_hash, body, input_items,"
    " created_at) SELECT $1, 'resp_' || g, 'c-' || g, 1, 2, md5(g::text), '{}', '[]', g"
    " FROM generate_series(1, $2::int) AS g"
)


async def test_a_plan_made_on_an_empty_table_finds_a_response_by_its_unique_index(fresh_url: str) -> None:
    # The two other indexes of `responses` start with `owner` too (migration 0013 made them partial).
    statement = "SELECT * FROM responses WHERE owner = $1 AND id = $2"
    _, document = await _planned_empty(
        fresh_url, "responses", statement, ["owner", "resp_0"],
        lambda connection: connection.execute(RESPONSES_OF, "owner", 3000), ["owner", "resp_1500"],
    )  # fmt: skip
    assert _indexes(document, "responses") == ["uq_responses_owner_id"], document


async def test_the_lookups_by_conversation_and_by_request_read_their_partial_indexes(fresh_url: str) -> None:
    await _filled(fresh_url, RESPONSES_OF, 3000, "responses")
    by_turn = functools.partial(find_turn_response, owner="b", conversation_id="c-7", turn=1)
    retried = functools.partial(
        find_retried, owner="b", request_hash=hashlib.md5(b"7").hexdigest(), idempotency_key=None, since=0.0
    )
    async with migrated_database(fresh_url) as db:
        turn_plan = await db.run(lambda c: _captured_explain(c, by_turn))
        retried_plan = await db.run(lambda c: _captured_explain(c, retried))
    assert _indexes(turn_plan, "responses") == ["ix_responses_owner_conversation_turn"], turn_plan
    assert _indexes(retried_plan, "responses") == ["ix_responses_owner_request"], retried_plan


ATTEMPTS_OF = (
    "INSERT INTO attempts (owner, conversation_id, request_id, endpoint, stream, status, latency_ms,"
    " cost_pusd, created_at) SELECT $1, 'c-' || (g % 300), 'r-' || g, '/v1/chat/completions', false, 200,"
    " 1.0, 5, g FROM generate_series(1, $2::int) AS g"
)


async def test_a_plan_made_on_an_empty_table_sums_a_conversations_spend_by_its_index(fresh_url: str) -> None:
    # Read before each turn of a conversation with a cost cap. Two other indexes of `attempts` start with
    # `owner`; the (owner, created_at) one would walk every call of the caller.
    spent = functools.partial(conversation_spent_pusd, owner="owner", conversation_id="c-0")
    async with migrated_database(fresh_url) as db:
        statement, parameters = await db.run(lambda c: _captured(c, spent))
    zero, owner, _ = parameters
    rows, document = await _planned_empty(
        fresh_url, "attempts", statement, parameters,
        lambda connection: connection.execute(ATTEMPTS_OF, "owner", 30000), [zero, owner, "c-7"],
    )  # fmt: skip
    assert rows[0][0] == 0
    plan = json.loads(document)[0]["Plan"]
    assert _indexes(document, "attempts") == ["ix_attempts_owner_conversation"], document
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 200, plan["Shared Hit Blocks"]


async def _generic_plan(url: str, statement: str, parameters: Any) -> Any:
    """EXPLAIN of `statement`'s generic plan: prepared on its own connection, as the driver prepares it, then
    run with `parameters` written as literals (a generic plan cannot use their values)."""
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        prepared = await connection.prepare(statement)  # (kept: the driver closes it once collected)
        values = _literals(parameters)
        return await connection.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {prepared.get_name()}({values})")
    finally:
        await connection.close()


async def test_a_callers_usage_bounded_in_time_reads_the_time_index(fresh_url: str) -> None:
    # The index is partial (created_at > 0). A custom plan proves that condition from `since`'s value; a
    # generic plan cannot, and without TIMED would walk every call of the caller.
    await _filled(fresh_url, ATTEMPTS_OF, 30000, "attempts")
    recent = functools.partial(usage_groups, query=UsageQuery(owner="b", since=29_900.0))
    async with migrated_database(fresh_url) as db:
        statement, parameters = await db.run(lambda c: _captured(c, recent))
    document = await _generic_plan(fresh_url, statement, parameters)
    nodes = _scans(json.loads(document)[0]["Plan"])
    assert [node["Index Name"] for node in nodes if "Index Name" in node] == ["ix_attempts_owner_created"]
    assert not [node for node in nodes if node["Node Type"] == "Seq Scan"], document

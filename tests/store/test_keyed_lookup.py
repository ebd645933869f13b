"""The lookup of a turn by its Idempotency-Key reads the partial key index, on SQLite and on Postgres."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event, text

from gateway.store.usage import keyed_turn
from tests.helpers import migrated_database

CALLS = text(
    "INSERT INTO attempts (owner, conversation_id, request_id, endpoint, stream, status, latency_ms, turn,"
    " idempotency_key, response_body, created_at, conversation_deleted, kind)"
    " VALUES ('owner', :conversation, 'r', '/v1/chat/completions', false, 200, 1.0, 1, :key, '{}', :at,"
    " false, 'call')"
)


def _plan(connection: Connection) -> str:
    """The plan of the statement `keyed_turn` runs (captured as sent, then explained)."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", capture)
    try:
        keyed_turn(connection, "owner", "c-7", "key-7", 0.0)
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    statement, parameters = sent[0]
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return "\n".join(str(row[-1]) for row in rows)
    rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
    return "\n".join(str(row[0]) for row in rows)


async def test_a_keyed_turn_is_found_through_the_key_index(database_url: str) -> None:
    async with migrated_database(database_url) as db:
        # most calls carry no key; a few do
        rows = [
            {"conversation": f"c-{n}", "at": float(n), "key": f"key-{n}" if n % 300 == 7 else None}
            for n in range(3000)
        ]
        await db.run(lambda c: c.execute(CALLS, rows))
        await db.run(lambda c: c.execute(text("ANALYZE")))
        plan = await db.run(_plan)
        found = await db.run(lambda c: keyed_turn(c, "owner", "c-7", "key-7", 0.0))
    assert "ix_attempts_owner_idempotency" in plan, plan
    assert found is not None and found.idempotency_key == "key-7"

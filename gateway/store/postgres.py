"""A turn's hot path on Postgres: two statements, straight on asyncpg, each prepared once per connection.

Through SQLAlchemy a turn made four pool checkouts (each paying `pool_pre_ping`'s round trip), an explicit
BEGIN and COMMIT around each unit and one round trip per statement: some fifteen round trips and three
durable commits. Here a turn is two statements, each one round trip and its own (implicit) transaction:

1. `TAKE`: take the conversation's lease and, if it was free, read the conversation row, its budgeted
   history window and, when the stable window's start lies before that window (the turn that cuts it),
   the stable anchor (the first user message from the start on) in the same statement; its commit does
   not wait for the WAL flush (a lease is coordination, not data: `set_config('synchronous_commit',
   'off', true)` for this transaction only).
2. `STORE_*`: the fenced conversation update (or insert), the turn's messages, its request-log row and the
   lease's release, one durable commit.

The statements run on the asyncpg connection of a pooled SQLAlchemy connection, so asyncpg's statement
cache prepares each once per connection (turned off, with SQLAlchemy's, for PgBouncer's transaction
pooling: see `create_engine`). No liveness ping: a pooled connection the server closed is known to asyncpg
without a round trip and is replaced at checkout; one that dies under a statement is replaced and the
statement retried once where that is safe (the lease statements are idempotent for their holder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table

from gateway.history import Budget, StoredMessage, window_bounds
from gateway.store.tables import ATTEMPTS, CONVERSATIONS, Conversation

if TYPE_CHECKING:
    import asyncpg

_CONVERSATION_COLUMNS = tuple(column.name for column in CONVERSATIONS.columns)

_NOW = "extract(epoch FROM clock_timestamp())::float8"  # the database server's clock: one for every replica
_NOT_DURABLE = "set_config('synchronous_commit', 'off', true)"

# $1 owner, $2 conversation id, $3 holder, $4 lease seconds; $5/$6 the header's budget, $7/$8 the default's;
# $9 the caller's conversation limit (0: none), counted (up to it) only when the conversation is new, by a
# function the planner cannot see into (tables.OWNED_CONVERSATIONS says why).
# The window is one range of the (conversation_pk, seq) index, from the seq bound on: its turn-start filters
# are written `+ 0` so that the planner cannot pick the (conversation_pk, turn_start_tokens) index for them.
# It did, and with no token budget (min_tokens 0) that range is the whole conversation: a turn's read grew
# with the conversation's length (2,000 stored messages: 0.46 ms against 0.13 for 20; now 0.16).
TAKE = f"""
WITH seen AS (
    SELECT holder FROM conversation_leases WHERE owner = $1 AND conversation_id = $2
), lease AS (
    INSERT INTO conversation_leases AS l (owner, conversation_id, holder, expires_at)
    VALUES ($1, $2, $3, {_NOW} + $4::float8)
    ON CONFLICT (owner, conversation_id) DO UPDATE
        SET holder = excluded.holder, expires_at = excluded.expires_at
        WHERE l.expires_at < {_NOW} OR l.holder = excluded.holder
    RETURNING holder
), conversation AS (
    SELECT c.*,
        CASE WHEN b.max_messages IS NULL THEN 0 ELSE c.message_count - b.max_messages END AS min_seq,
        CASE WHEN b.max_tokens IS NULL THEN 0 ELSE c.token_count - b.max_tokens END AS min_tokens,
        (b.max_messages = 0 OR b.max_tokens = 0 OR c.message_count = 0) IS TRUE AS empty
    FROM conversations c
    CROSS JOIN LATERAL (
        SELECT coalesce($5::int, c.max_history_messages, $7::int) AS max_messages,
               coalesce($6::bigint, c.max_history_tokens, $8::bigint) AS max_tokens
    ) b
    WHERE c.owner = $1 AND c.id = $2 AND EXISTS (SELECT FROM lease)
)
SELECT (SELECT holder FROM lease) AS taken, (SELECT holder FROM seen) AS seen, {_NOT_DURABLE} AS durability,
    CASE WHEN $9::int > 0 AND EXISTS (SELECT FROM lease) AND NOT EXISTS (SELECT FROM conversation)
        THEN gateway_owned_conversations($1, $9::int) END AS owned,
    {", ".join(f"c.{name}" for name in _CONVERSATION_COLUMNS)}, c.min_seq, c.min_tokens, c.empty,
    w.seqs, w.bodies, w.roles, w.tokens, w.turn_start_seqs, w.turn_start_tokens,
    a.seq AS anchor_seq, a.body AS anchor_body, a.tokens AS anchor_tokens,
    a.turn_start_seq AS anchor_turn_start_seq, a.turn_start_tokens AS anchor_turn_start_tokens
FROM (SELECT) AS one
LEFT JOIN conversation c ON true
LEFT JOIN LATERAL (
    SELECT array_agg(m.seq ORDER BY m.seq) AS seqs, array_agg(m.body ORDER BY m.seq) AS bodies,
        array_agg(m.role ORDER BY m.seq) AS roles, array_agg(m.tokens ORDER BY m.seq) AS tokens,
        array_agg(m.turn_start_seq ORDER BY m.seq) AS turn_start_seqs,
        array_agg(m.turn_start_tokens ORDER BY m.seq) AS turn_start_tokens
    FROM messages m
    WHERE NOT c.empty AND m.conversation_pk = c.pk
        AND m.turn_start_seq + 0 >= c.min_seq AND m.turn_start_tokens + 0 >= c.min_tokens
        AND m.seq >= CASE WHEN c.min_tokens > 0 THEN greatest(c.min_seq, coalesce((
                SELECT p.turn_start_seq FROM messages p
                WHERE p.conversation_pk = c.pk AND p.turn_start_tokens >= c.min_tokens
                ORDER BY p.turn_start_tokens LIMIT 1
            ), c.message_count)) ELSE c.min_seq END
) w ON true
LEFT JOIN LATERAL (
    SELECT m.seq, m.body, m.tokens, m.turn_start_seq, m.turn_start_tokens
    FROM messages m
    WHERE c.window_start < coalesce(w.seqs[1], c.message_count) AND m.conversation_pk = c.pk
        AND m.seq >= c.window_start AND m.role = 'user'
    ORDER BY m.seq LIMIT 1
) a ON true
"""

# The lease alone (the conversations API's lock): $1 owner, $2 conversation id, $3 holder, $4 seconds.
LEASE = f"""
WITH lease AS (
    INSERT INTO conversation_leases AS l (owner, conversation_id, holder, expires_at)
    VALUES ($1, $2, $3, {_NOW} + $4::float8)
    ON CONFLICT (owner, conversation_id) DO UPDATE
        SET holder = excluded.holder, expires_at = excluded.expires_at
        WHERE l.expires_at < {_NOW} OR l.holder = excluded.holder
    RETURNING holder
)
SELECT (SELECT holder FROM lease) AS taken, {_NOT_DURABLE} AS durability
"""

RENEW = f"""
WITH renewed AS (
    UPDATE conversation_leases SET expires_at = {_NOW} + $4::float8
    WHERE owner = $1 AND conversation_id = $2 AND holder = $3
    RETURNING holder
)
SELECT (SELECT count(*) FROM renewed) AS renewed, {_NOT_DURABLE} AS durability
"""

RELEASE = f"""
WITH released AS (
    DELETE FROM conversation_leases WHERE owner = $1 AND conversation_id = $2 AND holder = $3
    RETURNING holder
)
SELECT (SELECT count(*) FROM released) AS released, {_NOT_DURABLE} AS durability
"""


def _insert_columns(table: Table) -> tuple[str, ...]:
    return tuple(column.name for column in table.columns if not column.primary_key)


def _defaults(table: Table) -> dict[str, Any]:
    """Scalar Python-side defaults of a table's columns (the raw INSERTs below must supply them)."""
    found = {}
    for column in table.columns:
        default = column.default
        if default is not None and default.is_scalar:
            found[column.name] = cast(Any, default).arg
    return found


_NEW_CONVERSATION = _insert_columns(CONVERSATIONS)
_ATTEMPT_COLUMNS = _insert_columns(ATTEMPTS)
_CONVERSATION_DEFAULTS = _defaults(CONVERSATIONS)
_ATTEMPT_DEFAULTS = _defaults(ATTEMPTS)


def _store_statement(conversation_cte: str, first: int) -> str:
    """The turn's one write: `conversation_cte` returns the pk it wrote (none when fenced off).

    $1 owner, $2 conversation id, $3 holder (for the release); from `first`: the turn number, the time,
    the six message arrays, then the request-log row's columns.
    """
    n = first
    attempt = ", ".join(f"${n + 8 + i}" for i in range(len(_ATTEMPT_COLUMNS)))
    return f"""
WITH conversation AS ({conversation_cte}),
stored AS (
    INSERT INTO messages (conversation_pk, seq, turn, role, body, tokens, turn_start_seq, turn_start_tokens,
        created_at)
    SELECT c.pk, m.seq, ${n}::int, m.role, m.body, m.tokens, m.turn_start_seq, m.turn_start_tokens,
        ${n + 1}::float8
    FROM conversation c, unnest(${n + 2}::int[], ${n + 3}::text[], ${n + 4}::text[], ${n + 5}::int[],
        ${n + 6}::int[], ${n + 7}::bigint[]) AS m(seq, role, body, tokens, turn_start_seq, turn_start_tokens)
), attempt AS (
    INSERT INTO attempts ({", ".join(_ATTEMPT_COLUMNS)})
    SELECT {attempt} FROM conversation
), released AS (
    DELETE FROM conversation_leases WHERE owner = $1 AND conversation_id = $2 AND holder = $3
)
SELECT pk FROM conversation
"""


# An existing conversation, fenced on the message count the turn was composed from: $4 pk, $5 that count,
# $6 message_count, $7 token_count, $8 turn_count, $9 history_hash, $10 updated_at, $11/$12 the last user
# message's seq and tokens (null: unchanged), $13 replace the system prompt?, $14 the new one, $15 the
# stable window's new start after a cut (null: unchanged).
STORE_EXISTING = _store_statement(
    """
    UPDATE conversations SET message_count = $6::int, token_count = $7::bigint, turn_count = $8::int,
        history_hash = $9::varchar, updated_at = $10::float8,
        last_user_seq = coalesce($11::int, last_user_seq),
        last_user_tokens = coalesce($12::bigint, last_user_tokens),
        system_messages = CASE WHEN $13::boolean THEN $14::text ELSE system_messages END,
        window_start = coalesce($15::int, window_start)
    WHERE pk = $4::bigint AND message_count = $5::int
    RETURNING pk
    """,
    first=16,
)

# A new conversation: every column of the row from $4 on; none written if it exists meanwhile (fenced).
STORE_NEW = _store_statement(
    f"""
    INSERT INTO conversations ({", ".join(_NEW_CONVERSATION)})
    VALUES ({", ".join(f"${4 + i}" for i in range(len(_NEW_CONVERSATION)))})
    ON CONFLICT (owner, id) DO NOTHING
    RETURNING pk
    """,
    first=4 + len(_NEW_CONVERSATION),
)


def _window(row: asyncpg.Record) -> list[StoredMessage]:
    if row["seqs"] is None:
        return []
    return [
        StoredMessage.from_json(*message)
        for message in zip(
            row["seqs"],
            row["bodies"],
            row["roles"],
            row["tokens"],
            row["turn_start_seqs"],
            row["turn_start_tokens"],
            strict=True,
        )
    ]


def take_anchor(row: asyncpg.Record) -> StoredMessage | None:
    """The stable anchor a TAKE row read (only when it lies before the window), else None."""
    if row["anchor_seq"] is None:
        return None
    return StoredMessage.from_json(
        row["anchor_seq"],
        row["anchor_body"],
        "user",
        row["anchor_tokens"],
        row["anchor_turn_start_seq"],
        row["anchor_turn_start_tokens"],
    )


def read_is_enough(row: asyncpg.Record, budget: Budget, conversation: Conversation) -> bool:
    """True when the statement's window (read with the usual budget rule) holds the one `budget` needs."""
    if budget.max_messages == 0 or budget.max_tokens == 0 or conversation.message_count == 0:
        return True
    if row["empty"]:
        return False
    min_seq, min_tokens = window_bounds(budget, conversation.message_count, conversation.token_count)
    return bool(row["min_seq"] <= min_seq and row["min_tokens"] <= min_tokens)


def parse_take(
    row: asyncpg.Record, holder: str
) -> tuple[bool, bool, Conversation | None, list[StoredMessage]]:
    """(taken, read is current, conversation, candidates) of a TAKE row.

    The statement reads with its own start's snapshot. If that snapshot saw another holder's lease that the
    statement could nevertheless take over, the holder released it (with its turn) while the statement ran,
    so the read may miss that turn: then it is not current, and must be read again under the lease.
    """
    taken = row["taken"] == holder
    if not taken:
        return False, False, None, []
    current = row["seen"] is None or row["seen"] == holder
    if row["pk"] is None:
        return True, current, None, []
    conversation = Conversation(**{name: row[name] for name in _CONVERSATION_COLUMNS})
    return True, current, conversation, _window(row)


def store_arguments(
    owner: str,
    conversation_id: str,
    holder: str,
    conversation: Conversation | None,
    row: dict[str, Any],
    messages: Sequence[StoredMessage],
    attempt: dict[str, Any],
) -> tuple[str, list[Any]]:
    """The statement and arguments that store a turn: `row` holds the conversation's new column values."""
    turn = row["turn_count"]
    now = row["updated_at"]
    arrays = [
        [m.seq for m in messages],
        [str(m.role) for m in messages],
        [m.json for m in messages],
        [m.tokens for m in messages],
        [m.turn_start_seq for m in messages],
        [m.turn_start_tokens for m in messages],
    ]
    attempt_values = [attempt.get(name, _ATTEMPT_DEFAULTS.get(name)) for name in _ATTEMPT_COLUMNS]
    if conversation is None:
        created = {**_CONVERSATION_DEFAULTS, "last_user_seq": 0, "last_user_tokens": 0, **row}
        created.update(owner=owner, id=conversation_id, created_at=now)
        values = [created.get(name) for name in _NEW_CONVERSATION]
        return STORE_NEW, [owner, conversation_id, holder, *values, turn, now, *arrays, *attempt_values]
    system = row.get("system_messages")
    fenced = [
        conversation.pk,
        conversation.message_count,
        row["message_count"],
        row["token_count"],
        turn,
        row["history_hash"],
        now,
        row.get("last_user_seq"),
        row.get("last_user_tokens"),
        "system_messages" in row,
        system,
        row.get("window_start"),
    ]
    return STORE_EXISTING, [owner, conversation_id, holder, *fenced, turn, now, *arrays, *attempt_values]

"""The gateway's tables (SQLAlchemy Core) and the plain row objects the store reads some of them into.

migrations/versions spell the same schema out by hand; tests/store/test_schema.py checks that both agree.
Core `Table`s rather than ORM classes: the gateway reads and writes with statements of its own and never
uses a session, and the ORM (with the asyncio extension that imports it) costs a serving process ~7 MB.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.sql import expression, literal_column, text

from gateway.attempts import AttemptRecord

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()


def _pk() -> Column[int]:
    return Column("pk", BigId, primary_key=True, autoincrement=True)


# One conversation of one caller, with its running totals and settings.
CONVERSATIONS = Table(
    "conversations",
    metadata,
    _pk(),
    Column("owner", String(64), nullable=False),
    Column("id", String(128), nullable=False),
    Column("system_messages", Text),
    Column("metadata_json", Text),
    Column("max_history_messages", Integer),
    Column("max_history_tokens", Integer),
    Column("max_cost_pusd", BigInteger),
    Column("message_count", Integer, nullable=False, default=0),
    Column("token_count", BigInteger, nullable=False, default=0),
    Column("turn_count", Integer, nullable=False, default=0),
    Column("history_hash", String(64), nullable=False, default=""),
    Column("last_user_seq", Integer, nullable=False, default=0),
    Column("last_user_tokens", BigInteger, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("history_strategy", String(16)),
    Column("summary_model", String(200)),
    # The stable window's start: the seq from which whole turns are replayed (moves forward at cuts only).
    Column("window_start", Integer, nullable=False, default=0, server_default="0"),
    Column("summary_text", Text),
    Column("summary_tokens", Integer),
    Column("summary_through", Integer),  # stored messages the summary covers
    Column("summary_updated_at", Float),
    UniqueConstraint("owner", "id", name="uq_conversations_owner_id"),
    Index("ix_conversations_owner_updated", "owner", "updated_at", postgresql_where=text("updated_at > 0")),
)

# The listing index is partial on Postgres, with a condition every listing states (`LISTED`) and no lookup by
# (owner, id) does: so such a lookup has one index to use, the unique one. A prepared statement's generic
# plan lives as long as its connection; planned while the table was small and had no statistics, the two
# indexes that start with `owner` cost the same, the listing one was picked, and the lookup then walked
# every conversation of the caller (2.5 ms of the server's CPU at 4,400), until an ANALYZE replanned it,
# which never came with autovacuum off. Migration 0011 makes the index partial in an existing database.
# A literal, not a bound parameter: the planner cannot prove an index's condition from a parameter.
LISTED = CONVERSATIONS.c.updated_at > literal_column("0")

# Postgres only: how many conversations a caller has, counted up to `bound` (the per-caller limit), which the
# turn's TAKE statement asks for when a conversation is new (store/postgres.py). A PL/pgSQL function because
# the planner costs it as a plain call: written inline, the count's estimate for a caller with many
# conversations made the statement's generic plan look costly, and Postgres then planned it anew at every
# turn (~0.4 ms of the server's CPU each). Migration 0010 creates it in an existing database (the same text:
# tests/store/test_schema.py compares a migrated database with a created one).
OWNED_CONVERSATIONS = """
CREATE OR REPLACE FUNCTION gateway_owned_conversations(caller varchar, bound integer) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT count(*) FROM (SELECT FROM conversations WHERE owner = caller LIMIT bound) AS bounded);
END
$$
"""
DROP_OWNED_CONVERSATIONS = "DROP FUNCTION IF EXISTS gateway_owned_conversations(varchar, integer)"
_create_owned = DDL(OWNED_CONVERSATIONS)  # type: ignore[no-untyped-call]
_drop_owned = DDL(DROP_OWNED_CONVERSATIONS)  # type: ignore[no-untyped-call]
event.listen(CONVERSATIONS, "after_create", _create_owned.execute_if(dialect="postgresql"))
event.listen(CONVERSATIONS, "after_drop", _drop_owned.execute_if(dialect="postgresql"))

# One stored OpenAI message, with the precomputed columns trimming needs.
MESSAGES = Table(
    "messages",
    metadata,
    _pk(),
    Column("conversation_pk", BigInteger, ForeignKey("conversations.pk", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("turn", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("body", Text, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("turn_start_seq", Integer, nullable=False),
    Column("turn_start_tokens", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("conversation_pk", "seq", name="uq_messages_conversation_seq"),
    Index("ix_messages_conversation_turn_tokens", "conversation_pk", "turn_start_tokens"),
)

# One upstream call (the request log), recorded whether it succeeded or not.
ATTEMPTS = Table(
    "attempts",
    metadata,
    _pk(),
    Column("owner", String(64), nullable=False),
    Column("conversation_id", String(128)),
    Column("request_id", String(64), nullable=False),
    Column("upstream_request_id", String(200)),
    Column("endpoint", String(200), nullable=False),
    Column("model", String(200)),
    Column("response_model", String(200)),
    Column("stream", Boolean, nullable=False, default=False),
    Column("status", Integer, nullable=False),
    Column("error", Text),
    Column("latency_ms", Float, nullable=False),
    Column("ttfb_ms", Float),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("history_tokens", Integer),
    Column("history_messages", Integer),
    Column("cost_pusd", BigInteger),
    Column("history_cost_pusd", BigInteger),
    Column("turn", Integer),
    Column("fingerprint", String(64)),
    Column("idempotency_key", String(256)),
    Column("response_body", Text),
    Column("created_at", Float, nullable=False),
    # Set when the conversation is deleted: its usage stays in reports but not in a new conversation's.
    Column("conversation_deleted", Boolean, nullable=False, default=False, server_default=expression.false()),
    # "call" (a client's request) or "summary" (the gateway's own summary call for a conversation).
    Column("kind", String(16), nullable=False, default="call", server_default="call"),
    Column("cache_write_tokens", Integer),
    # What the call would have cost with the whole stored history sent uncached (0 for summary calls).
    Column("full_replay_cost_pusd", BigInteger),
    # A stored turn's strategy and the stored messages its summary covered (for X-History-* on replays).
    Column("history_strategy", String(16)),
    Column("history_summarized", Integer),
    # Set when the tokens are the gateway's own count (a stream that ended without the upstream's usage).
    Column("estimated", Boolean, nullable=False, default=False, server_default=expression.false()),
    # Partial on Postgres, for the reason of LISTED above: a lookup by (owner, conversation_id) (a cost cap's
    # spend, before each turn) then has one owner-led index to use. Time-bounded reads state TIMED. Migration
    # 0014.
    Index("ix_attempts_owner_created", "owner", "created_at", postgresql_where=text("created_at > 0")),
    Index("ix_attempts_owner_conversation", "owner", "conversation_id", "pk"),
    # Partial: most calls carry no Idempotency-Key, and a lookup by key (`= key` implies `IS NOT NULL`) can
    # use it while no other lookup by owner can (the reason for tables.LISTED above). Migration 0012.
    Index(
        "ix_attempts_owner_idempotency",
        "owner",
        "idempotency_key",
        sqlite_where=text("idempotency_key IS NOT NULL"),
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    Index("ix_attempts_created", "created_at"),
)

# The condition of the (owner, created_at) index of `attempts` on Postgres, which every read bounded in time
# states (a literal, as LISTED). The gateway writes `time.time()`: no row is left out.
TIMED = ATTEMPTS.c.created_at > literal_column("0")

# What one in-flight call of a key with a budget may cost, until its request-log row is written.
BUDGET_RESERVATIONS = Table(
    "budget_reservations",
    metadata,
    _pk(),
    Column("owner", String(64), nullable=False),
    Column("pusd", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_budget_reservations_owner", "owner", "expires_at"),
)

# A gateway key: only its SHA-256 is stored.
API_KEYS = Table(
    "api_keys",
    metadata,
    _pk(),
    Column("name", String(128), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("budget_pusd", BigInteger),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

# A time-bounded lock on one conversation, shared by every gateway process.
LEASES = Table(
    "conversation_leases",
    metadata,
    Column("owner", String(64), primary_key=True),
    Column("conversation_id", String(128), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# A Responses-API response stored as one turn of a conversation (`POST /v1/responses`, translated).
RESPONSES = Table(
    "responses",
    metadata,
    _pk(),
    Column("owner", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("conversation_id", String(128), nullable=False),
    Column("turn", Integer, nullable=False),
    Column("message_end", Integer, nullable=False),  # the conversation's message count after the turn
    Column("previous_response_id", String(64)),
    Column("request_hash", String(64), nullable=False),
    Column("idempotency_key", String(256)),
    Column("body", Text, nullable=False),
    Column("input_items", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("owner", "id", name="uq_responses_owner_id"),
    # Partial on Postgres, with conditions only the lookups by conversation or by request imply (`= x`
    # implies `IS NOT NULL`): a lookup by (owner, id) can use only the unique index (see LISTED). Migration
    # 0013.
    Index(
        "ix_responses_owner_conversation_turn",
        "owner",
        "conversation_id",
        "turn",
        postgresql_where=text("conversation_id IS NOT NULL"),
    ),
    Index(
        "ix_responses_owner_request",
        "owner",
        "request_hash",
        "created_at",
        postgresql_where=text("request_hash IS NOT NULL"),
    ),
)

# A dashboard sign-in: the SHA-256 of its cookie value (never the cookie, never the key).
UI_SESSIONS = Table(
    "ui_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("identity", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_ui_sessions_expires", "expires_at"),
)

# An upstream object (file, batch, stored response, ...) created through the gateway, and its caller.
# Recorded in gateway-key mode, where every caller shares the gateway's upstream account: only the
# caller that created an object may see or use it.
UPSTREAM_OBJECTS = Table(
    "upstream_objects",
    metadata,
    Column("object_id", String(200), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
)


# The row objects: one attribute per column of their table (a test checks it), built
# from a row's mapping (`Conversation(**row._mapping)`). Plain data: reading or setting an attribute never
# touches the database.


@dataclasses.dataclass(kw_only=True)
class Conversation:
    """A row of CONVERSATIONS; every column has a default (what a new row gets, else None) so that a
    caller may build one from the columns it knows."""

    pk: int = 0
    owner: str = ""
    id: str = ""
    system_messages: str | None = None
    metadata_json: str | None = None
    max_history_messages: int | None = None
    max_history_tokens: int | None = None
    max_cost_pusd: int | None = None
    message_count: int = 0
    token_count: int = 0
    turn_count: int = 0
    history_hash: str = ""
    last_user_seq: int = 0
    last_user_tokens: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    history_strategy: str | None = None
    summary_model: str | None = None
    window_start: int = 0
    summary_text: str | None = None
    summary_tokens: int | None = None
    summary_through: int | None = None
    summary_updated_at: float | None = None


@dataclasses.dataclass(kw_only=True)
class Message:
    """A row of MESSAGES."""

    pk: int
    conversation_pk: int
    seq: int
    turn: int
    role: str
    body: str
    tokens: int
    turn_start_seq: int
    turn_start_tokens: int
    created_at: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Attempt(AttemptRecord):
    """A row of ATTEMPTS: the request-log record as it was written, with its key and whether its
    conversation has been deleted since."""

    pk: int
    conversation_deleted: bool


@dataclasses.dataclass(kw_only=True)
class ApiKey:
    """A row of API_KEYS."""

    pk: int
    name: str
    secret_hash: str
    budget_pusd: int | None
    created_at: float
    revoked_at: float | None


@dataclasses.dataclass(kw_only=True)
class StoredResponse:
    """A row of RESPONSES."""

    pk: int
    owner: str
    id: str
    conversation_id: str
    turn: int
    message_end: int
    previous_response_id: str | None
    request_hash: str
    idempotency_key: str | None
    body: str
    input_items: str
    created_at: float


ROW_CLASSES: dict[type, Table] = {
    Conversation: CONVERSATIONS,
    Message: MESSAGES,
    Attempt: ATTEMPTS,
    ApiKey: API_KEYS,
    StoredResponse: RESPONSES,
}

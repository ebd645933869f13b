"""SQLAlchemy 2 table definitions; migrations/versions spell the same schema out by hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.attributes import manager_of_class
from sqlalchemy.sql import expression

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the gateway's tables."""


class Conversation(Base):
    """One conversation of one caller, with its running totals and settings."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("owner", "id", name="uq_conversations_owner_id"),
        Index("ix_conversations_owner_updated", "owner", "updated_at"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64))
    id: Mapped[str] = mapped_column(String(128))
    system_messages: Mapped[str | None] = mapped_column(Text)
    metadata_json: Mapped[str | None] = mapped_column(Text)
    max_history_messages: Mapped[int | None] = mapped_column(Integer)
    max_history_tokens: Mapped[int | None] = mapped_column(Integer)
    max_cost_pusd: Mapped[int | None] = mapped_column(BigInteger)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    token_count: Mapped[int] = mapped_column(BigInteger, default=0)
    turn_count: Mapped[int] = mapped_column(Integer, default=0)
    history_hash: Mapped[str] = mapped_column(String(64), default="")
    last_user_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_user_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    history_strategy: Mapped[str | None] = mapped_column(String(16))
    summary_model: Mapped[str | None] = mapped_column(String(200))
    # The stable window's start: the seq from which whole turns are replayed (moves forward at cuts only).
    window_start: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    summary_text: Mapped[str | None] = mapped_column(Text)
    summary_tokens: Mapped[int | None] = mapped_column(Integer)
    summary_through: Mapped[int | None] = mapped_column(Integer)  # stored messages the summary covers
    summary_updated_at: Mapped[float | None] = mapped_column(Float)


class Message(Base):
    """One stored OpenAI message, with the precomputed columns trimming needs."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_pk", "seq", name="uq_messages_conversation_seq"),
        Index("ix_messages_conversation_turn_tokens", "conversation_pk", "turn_start_tokens"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.pk", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    turn: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer)
    turn_start_seq: Mapped[int] = mapped_column(Integer)
    turn_start_tokens: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)


class Attempt(Base):
    """One upstream call (the request log), recorded whether it succeeded or not."""

    __tablename__ = "attempts"
    __table_args__ = (
        Index("ix_attempts_owner_created", "owner", "created_at"),
        Index("ix_attempts_owner_conversation", "owner", "conversation_id", "pk"),
        Index("ix_attempts_owner_idempotency", "owner", "idempotency_key"),
        Index("ix_attempts_created", "created_at"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str] = mapped_column(String(64))
    upstream_request_id: Mapped[str | None] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200))
    response_model: Mapped[str | None] = mapped_column(String(200))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttfb_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    history_tokens: Mapped[int | None] = mapped_column(Integer)
    history_messages: Mapped[int | None] = mapped_column(Integer)
    cost_pusd: Mapped[int | None] = mapped_column(BigInteger)
    history_cost_pusd: Mapped[int | None] = mapped_column(BigInteger)
    turn: Mapped[int | None] = mapped_column(Integer)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    # Set when the conversation is deleted: its usage stays in reports but not in a new conversation's.
    conversation_deleted: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=expression.false()
    )
    # "call" (a client's request) or "summary" (the gateway's own summary call for a conversation).
    kind: Mapped[str] = mapped_column(String(16), default="call", server_default="call")
    cache_write_tokens: Mapped[int | None] = mapped_column(Integer)
    # What the call would have cost with the whole stored history sent uncached (0 for summary calls).
    full_replay_cost_pusd: Mapped[int | None] = mapped_column(BigInteger)
    # A stored turn's strategy and the stored messages its summary covered (for X-History-* on replays).
    history_strategy: Mapped[str | None] = mapped_column(String(16))
    history_summarized: Mapped[int | None] = mapped_column(Integer)
    # Set when the tokens are the gateway's own count (a stream that ended without the upstream's usage).
    estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=expression.false())


class BudgetReservation(Base):
    """What one in-flight call of a key with a budget may cost, until its request-log row is written."""

    __tablename__ = "budget_reservations"
    __table_args__ = (Index("ix_budget_reservations_owner", "owner", "expires_at"),)

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64))
    pusd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """A gateway key: only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    budget_pusd: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class Lease(Base):
    """A time-bounded lock on one conversation, shared by every gateway process."""

    __tablename__ = "conversation_leases"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[float] = mapped_column(Float)


class StoredResponse(Base):
    """A Responses-API response stored as one turn of a conversation (`POST /v1/responses`, translated)."""

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("owner", "id", name="uq_responses_owner_id"),
        Index("ix_responses_owner_conversation_turn", "owner", "conversation_id", "turn"),
        Index("ix_responses_owner_request", "owner", "request_hash", "created_at"),
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64))
    id: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str] = mapped_column(String(128))
    turn: Mapped[int] = mapped_column(Integer)
    message_end: Mapped[int] = mapped_column(Integer)  # the conversation's message count after the turn
    previous_response_id: Mapped[str | None] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    body: Mapped[str] = mapped_column(Text)
    input_items: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class UiSession(Base):
    """A dashboard sign-in: the SHA-256 of its cookie value (never the cookie, never the key)."""

    __tablename__ = "ui_sessions"
    __table_args__ = (Index("ix_ui_sessions_expires", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    identity: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class UpstreamObject(Base):
    """An upstream object (file, batch, stored response, ...) created through the gateway, and its caller.

    Recorded in gateway-key mode, where every caller shares the gateway's upstream account: only the
    caller that created an object may see or use it.
    """

    __tablename__ = "upstream_objects"

    object_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)


# Instrument the mapped classes now (the ORM otherwise does it at the first construction, which
# `read_conversation` skips).
Base.registry.configure()


def read_conversation(values: Mapping[str, Any]) -> Conversation:
    """A `Conversation` holding a row as read (column name -> value; the names are its attributes).

    Built without the ORM's per-attribute instrumentation, which made `Conversation(**values)` the
    costliest step of reading a turn's state (some ten times this). Like that object it is transient and
    read-only: the turn reads it and writes with statements of its own; never add it to a session.
    """
    conversation: Conversation = manager_of_class(Conversation).new_instance()
    conversation.__dict__.update(values)
    return conversation

"""Conversation queries: state, the budgeted history window, atomic turn append, listing, delete."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from gateway.errors import ConversationBusy, ConversationLimitReached
from gateway.history import Budget, BudgetRule, StoredMessage, window_bounds
from gateway.store import statements
from gateway.store.rows import load_all, load_first
from gateway.store.tables import ATTEMPTS, CONVERSATIONS, LISTED, MESSAGES, RESPONSES, Conversation
from gateway.store.window_cache import CachedWindow, window_from

_BY_ID = select(CONVERSATIONS).where(
    CONVERSATIONS.c.owner == bindparam("owner"), CONVERSATIONS.c.id == bindparam("conversation_id")
)
_BY_ID_COLUMNS = tuple(str(column.key) for column in _BY_ID.selected_columns)
_INSERT_CONVERSATION = CONVERSATIONS.insert()
# Fencing: a turn writes only over the state it was composed from (its message_count).
_UPDATE_CONVERSATION = CONVERSATIONS.update().where(
    CONVERSATIONS.c.pk == bindparam("conversation_pk_"),
    CONVERSATIONS.c.message_count == bindparam("expected_count_"),
)
_INSERT_MESSAGES = MESSAGES.insert()
# How many conversations a caller has, counted up to a bound (so never more than that many index entries).
_OWNED = select(func.count()).select_from(
    select(CONVERSATIONS.c.pk)
    .where(CONVERSATIONS.c.owner == bindparam("owner"))
    .limit(bindparam("bound"))
    .subquery()
)


def check_conversation_room(connection: Connection, owner: str, limit: int) -> None:
    """429 `conversation_limit_reached` when `owner` already has `limit` conversations (0: no limit)."""
    if limit <= 0:
        return
    # Through SQLAlchemy, not the lane's precompiled statements: it binds the LIMIT itself (new ids only).
    refuse_past_limit(connection.execute(_OWNED, {"owner": owner, "bound": limit}).scalar_one(), limit)


def refuse_past_limit(owned: int, limit: int) -> None:
    """429 `conversation_limit_reached` when a caller who owns `owned` conversations may not start one."""
    if 0 < limit <= owned:
        raise ConversationLimitReached(
            f"This caller already has {limit} conversations, the most this gateway keeps per caller "
            "(GATEWAY_MAX_CONVERSATIONS_PER_CALLER): delete some before starting new ones."
        )


def get_conversation(connection: Connection, owner: str, conversation_id: str) -> Conversation | None:
    """The caller's conversation with this id, or None."""
    statement = select(CONVERSATIONS).where(
        CONVERSATIONS.c.owner == owner, CONVERSATIONS.c.id == conversation_id
    )
    return load_first(connection, Conversation, statement)


@functools.cache
def _window_statement(by_seq: bool, by_tokens: bool) -> Select[int, str, int, int, int, str]:
    """The window query for the bounds that apply, with bound parameters (built and compiled once)."""
    pk = bindparam("pk", type_=BigInteger)
    min_seq = bindparam("min_seq", type_=Integer)
    min_tokens = bindparam("min_tokens", type_=BigInteger)
    statement = select(
        MESSAGES.c.seq,
        MESSAGES.c.body,
        MESSAGES.c.tokens,
        MESSAGES.c.turn_start_seq,
        MESSAGES.c.turn_start_tokens,
        MESSAGES.c.role,
    ).where(MESSAGES.c.conversation_pk == pk)
    start: Any = min_seq if by_seq else None
    if by_seq:
        statement = statement.where(MESSAGES.c.turn_start_seq >= min_seq)
    if by_tokens:
        first_fitting_turn = (
            select(MESSAGES.c.turn_start_seq)
            .where(MESSAGES.c.conversation_pk == pk, MESSAGES.c.turn_start_tokens >= min_tokens)
            # Every message costs at least 3 tokens, so one turn_start_tokens value is one turn.
            .order_by(MESSAGES.c.turn_start_tokens)
            .limit(1)
            .scalar_subquery()
        )
        token_start = func.coalesce(first_fitting_turn, bindparam("message_count", type_=Integer))
        start = token_start if start is None else case((token_start > min_seq, token_start), else_=min_seq)
        statement = statement.where(MESSAGES.c.turn_start_tokens >= min_tokens)
    if start is not None:
        statement = statement.where(MESSAGES.c.seq >= start)
    return statement.order_by(MESSAGES.c.seq)


def _window(
    conversation: Conversation, budget: Budget
) -> tuple[Select[int, str, int, int, int, str], dict[str, int]] | None:
    if budget.max_messages == 0 or budget.max_tokens == 0 or conversation.message_count == 0:
        return None
    min_seq, min_tokens = window_bounds(budget, conversation.message_count, conversation.token_count)
    statement = _window_statement(min_seq > 0, min_tokens > 0)
    parameters = {"pk": conversation.pk}
    if min_seq > 0:
        parameters["min_seq"] = min_seq
    if min_tokens > 0:
        parameters |= {"min_tokens": min_tokens, "message_count": conversation.message_count}
    return statement, parameters


def window_query(conversation: Conversation, budget: Budget) -> Select[int, str, int, int, int, str] | None:
    """The one query that reads the messages a budget may send, oldest first; None when none can be.

    Turn starts (seq and tokens before the turn) only grow along a conversation, so each binding limit
    is a lower bound on `seq`, and the query reads a range of the (conversation, seq) index from there:
    - the message limit bounds it at `message_count - max_messages`;
    - the token limit at the start of the oldest turn that fits, found by a one-row probe of the
      (conversation, turn_start_tokens) index.
    So the rows read are the window (plus, at most, the part of a turn that does not fit), however long
    the conversation is.
    """
    found = _window(conversation, budget)
    return None if found is None else found[0].params(found[1])


def read_window(connection: Connection, conversation: Conversation, budget: Budget) -> list[StoredMessage]:
    """The stored messages the budget may send (a suffix that select_window trims), in one indexed query."""
    found = _window(conversation, budget)
    if found is None:
        return []
    rows = statements.fetch(connection, *found)
    # The bodies stay JSON text: the turn splices them into the upstream body as they are.
    return [StoredMessage.from_json(row[0], row[1], row[5], row[2], row[3], row[4]) for row in rows]


def conversation_budget(rule: BudgetRule, conversation: Conversation) -> Budget:
    """The budget `rule` gives this conversation (its own settings fill what the request left out)."""
    return rule.resolve(Budget(conversation.max_history_messages, conversation.max_history_tokens))


@dataclass(frozen=True)
class LoadedTurn:
    """What a turn reads before it is composed: the conversation, its window candidates, the stable anchor."""

    conversation: Conversation | None
    candidates: list[StoredMessage]
    anchor: StoredMessage | None = None  # the first stored user message at or after the window's start
    cached: bool = False  # the candidates came from the window cache (store/window_cache.py), not a read


_MESSAGE_COLUMNS = (
    MESSAGES.c.seq,
    MESSAGES.c.body,
    MESSAGES.c.tokens,
    MESSAGES.c.turn_start_seq,
    MESSAGES.c.turn_start_tokens,
)
_ANCHOR = (
    select(*_MESSAGE_COLUMNS)
    .where(
        MESSAGES.c.conversation_pk == bindparam("conversation_pk"),
        MESSAGES.c.seq >= bindparam("start"),
        MESSAGES.c.role == "user",
    )
    .order_by(MESSAGES.c.seq)
    .limit(1)
)


def _stored(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(row[0], json.loads(row[1]), row[2], row[3], row[4])


def load_turn_state(
    connection: Connection,
    owner: str,
    conversation_id: str,
    budget_for: Callable[[Conversation], Budget],
    anchored: Callable[[Conversation], bool],
    max_conversations: int = 0,
    cached: CachedWindow | None = None,
) -> LoadedTurn:
    """A unit of work: the caller's conversation (None if new; a new one past the caller's
    `max_conversations` is refused, 429, before anything is sent upstream), the stored messages the
    budget `budget_for` gives it may send, and (when `anchored` says the strategy needs it) the stable anchor:
    found among the candidates when they reach back to the window's start, else by one more indexed probe
    of (conversation, seq) from there (a window that no longer fits: this turn cuts). The window comes from
    `cached` (the conversation's newest messages, store/window_cache.py) when they hold all of it."""
    rows = statements.fetch(connection, _BY_ID, {"owner": owner, "conversation_id": conversation_id})
    if not rows:
        check_conversation_room(connection, owner, max_conversations)
        return LoadedTurn(None, [])
    conversation = Conversation(**dict(zip(_BY_ID_COLUMNS, rows[0], strict=True)))
    budget = budget_for(conversation)
    candidates = window_from(cached, conversation, budget) if cached is not None else None
    from_cache = candidates is not None
    if candidates is None:
        candidates = read_window(connection, conversation, budget)
    loaded = loaded_turn(conversation, candidates, anchored(conversation), from_cache)
    if loaded is not None:
        return loaded
    parameters = {"conversation_pk": conversation.pk, "start": conversation.window_start}
    found = statements.fetch(connection, _ANCHOR, parameters)
    return LoadedTurn(conversation, candidates, _stored(found[0]) if found else None, from_cache)


def loaded_turn(
    conversation: Conversation, candidates: list[StoredMessage], anchored: bool, cached: bool = False
) -> LoadedTurn | None:
    """A turn's state from its conversation and window candidates; None when the stable anchor lies before
    the candidates and needs its own probe."""
    start = conversation.window_start
    if not anchored or start >= conversation.message_count:
        return LoadedTurn(conversation, candidates, cached=cached)
    if candidates and candidates[0].seq <= start:
        # The usual case (the window fits): the candidates hold everything from the start, anchor included.
        anchor = next((m for m in candidates if m.seq >= start and m.role == "user"), None)
        return LoadedTurn(conversation, candidates, anchor, cached)
    return None


def read_bodies(connection: Connection, conversation_pk: int, first: int, end: int) -> list[dict[str, Any]]:
    """The stored messages with `first <= seq < end`, oldest first (what a summary call folds in, or the
    newest messages the dedupe compares a request with)."""
    statement = (
        select(MESSAGES.c.body)
        .where(MESSAGES.c.conversation_pk == conversation_pk, MESSAGES.c.seq >= first, MESSAGES.c.seq < end)
        .order_by(MESSAGES.c.seq)
    )
    return [json.loads(row[0]) for row in connection.execute(statement).all()]


CHANGED = (
    "The conversation changed while this turn ran (another request took it over); "
    "this turn was not stored. Retry it."
)


@dataclass(frozen=True)
class SummaryState:
    """A conversation's summary: its text, its token count and how many stored messages it covers."""

    text: str
    tokens: int
    through: int
    updated_at: float


@dataclass(frozen=True)
class TurnWrite:
    """Everything one successful turn stores, computed by the caller."""

    owner: str
    conversation_id: str
    system_messages: list[dict[str, Any]] | None
    replace_system: bool
    messages: Sequence[StoredMessage]
    turn: int
    history_digest: str
    now: float
    window_start: int | None = None  # the stable window's new start after a cut (None: unchanged)
    summary: SummaryState | None = None  # a summary folded in at this turn's cut (None: unchanged)


def summary_columns(summary: SummaryState | None) -> dict[str, Any]:
    """The conversation columns of a summary (all None to clear it)."""
    return {
        "summary_text": summary.text if summary else None,
        "summary_tokens": summary.tokens if summary else None,
        "summary_through": summary.through if summary else None,
        "summary_updated_at": summary.updated_at if summary else None,
    }


def stored_summary(conversation: Conversation | None) -> SummaryState | None:
    """The conversation's summary, or None when it has none."""
    if conversation is None or conversation.summary_text is None:
        return None
    return SummaryState(
        conversation.summary_text,
        conversation.summary_tokens or 0,
        conversation.summary_through or 0,
        conversation.summary_updated_at or conversation.updated_at,
    )


def turn_row(conversation: Conversation | None, write: TurnWrite) -> dict[str, Any]:
    """The conversation's columns after the turn: running totals, digest, and what the turn replaces."""
    token_total = sum(m.tokens for m in write.messages)
    last_user = next((m for m in reversed(write.messages) if m.role == "user"), None)
    values: dict[str, Any] = {
        "message_count": (conversation.message_count if conversation else 0) + len(write.messages),
        "token_count": (conversation.token_count if conversation else 0) + token_total,
        "turn_count": write.turn,
        "history_hash": write.history_digest,
        "updated_at": write.now,
    }
    if last_user is not None:
        values["last_user_seq"] = last_user.seq
        values["last_user_tokens"] = last_user.turn_start_tokens
    if write.replace_system:
        values["system_messages"] = json.dumps(write.system_messages) if write.system_messages else None
    if write.window_start is not None:
        values["window_start"] = write.window_start
    if write.summary is not None:
        values.update(summary_columns(write.summary))
    return values


def write_turn(connection: Connection, conversation: Conversation | None, write: TurnWrite) -> int:
    """Insert the turn's messages and update (or create) the conversation; returns the conversation pk.

    Fenced: 409 `conversation_busy` when the conversation is no longer in the state the turn was composed
    from (a turn whose lease expired under it must not interleave its messages with a newer turn's).
    """
    values = turn_row(conversation, write)
    if conversation is None:
        values.setdefault("system_messages", None)
        created = {"owner": write.owner, "id": write.conversation_id, "created_at": write.now, **values}
        try:
            pk = statements.insert_returning_key(connection, _INSERT_CONVERSATION, created)
        except IntegrityError as exc:  # created meanwhile by a turn that held
            raise ConversationBusy(CHANGED) from exc  # the lock after ours expired
    else:
        pk = conversation.pk
        fence = {"conversation_pk_": pk, "expected_count_": conversation.message_count}
        if statements.execute(connection, _UPDATE_CONVERSATION, {**fence, **values}) != 1:
            raise ConversationBusy(CHANGED)
    if write.messages:
        statements.execute(
            connection,
            _INSERT_MESSAGES,
            [
                {
                    "conversation_pk": pk,
                    "seq": m.seq,
                    "turn": write.turn,
                    "role": str(m.role),
                    "body": m.json,
                    "tokens": m.tokens,
                    "turn_start_seq": m.turn_start_seq,
                    "turn_start_tokens": m.turn_start_tokens,
                    "created_at": write.now,
                }
                for m in write.messages
            ],
        )
    return pk


def list_messages(
    connection: Connection,
    conversation: Conversation,
    *,
    limit: int | None = None,
    after: int | None = None,
    descending: bool = False,
) -> list[tuple[int, dict[str, Any], float]]:
    """Stored messages as (seq, message, created_at), oldest first (or newest first); `after` is a seq.

    `after` excludes that seq and everything before it in the chosen order.
    """
    statement = select(MESSAGES.c.seq, MESSAGES.c.body, MESSAGES.c.created_at).where(
        MESSAGES.c.conversation_pk == conversation.pk
    )
    if after is not None:
        statement = statement.where(MESSAGES.c.seq < after if descending else MESSAGES.c.seq > after)
    statement = statement.order_by(MESSAGES.c.seq.desc() if descending else MESSAGES.c.seq)
    if limit is not None:
        statement = statement.limit(limit)
    return [(row[0], json.loads(row[1]), row[2]) for row in connection.execute(statement).all()]


def create_conversation(
    connection: Connection, owner: str, conversation_id: str, values: dict[str, Any], now: float
) -> Conversation:
    """Insert an empty conversation with the given settings columns."""
    created = {
        "owner": owner,
        "id": conversation_id,
        "message_count": 0,
        "token_count": 0,
        "turn_count": 0,
        "history_hash": "",
        "last_user_seq": 0,
        "last_user_tokens": 0,
        "window_start": 0,
        "created_at": now,
        "updated_at": now,
        **values,
    }
    key = connection.execute(_INSERT_CONVERSATION, created).inserted_primary_key
    assert key is not None
    found = load_first(connection, Conversation, select(CONVERSATIONS).where(CONVERSATIONS.c.pk == key[0]))
    assert found is not None
    return found


def update_conversation(
    connection: Connection, conversation: Conversation, values: dict[str, Any], now: float
) -> None:
    """Set settings columns and updated_at, in the database and on the `conversation` object."""
    values = {**values, "updated_at": now}
    connection.execute(update(CONVERSATIONS).where(CONVERSATIONS.c.pk == conversation.pk).values(**values))
    for name, value in values.items():
        setattr(conversation, name, value)


def list_conversations(
    connection: Connection,
    owner: str | None,
    *,
    limit: int,
    after: Conversation | None = None,
    owner_prefix: str | None = None,
) -> list[Conversation]:
    """Conversations newest activity first, of one owner (or, for the operator, of all or of owners
    whose identity starts with `owner_prefix`); `after` is the previous page's last conversation."""
    statement = select(CONVERSATIONS).where(LISTED)
    if owner is not None:
        statement = statement.where(CONVERSATIONS.c.owner == owner)
    if owner_prefix:
        statement = statement.where(CONVERSATIONS.c.owner.startswith(owner_prefix, autoescape=True))
    if after is not None:
        statement = statement.where(
            or_(
                CONVERSATIONS.c.updated_at < after.updated_at,
                and_(CONVERSATIONS.c.updated_at == after.updated_at, CONVERSATIONS.c.pk < after.pk),
            )
        )
    statement = statement.order_by(CONVERSATIONS.c.updated_at.desc(), CONVERSATIONS.c.pk.desc()).limit(limit)
    return load_all(connection, Conversation, statement)


def find_conversations(
    connection: Connection, conversation_id: str, owner_prefix: str | None = None
) -> list[Conversation]:
    """Every owner's conversation with this id (the operator's view), oldest first."""
    statement = (
        select(CONVERSATIONS).where(CONVERSATIONS.c.id == conversation_id).order_by(CONVERSATIONS.c.pk)
    )
    if owner_prefix:
        statement = statement.where(CONVERSATIONS.c.owner.startswith(owner_prefix, autoescape=True))
    return load_all(connection, Conversation, statement)


def turn_messages(connection: Connection, conversation: Conversation, turn: int) -> list[dict[str, Any]]:
    """The stored messages of one turn (its new messages, then the reply), oldest first."""
    statement = (
        select(MESSAGES.c.body)
        .where(MESSAGES.c.conversation_pk == conversation.pk, MESSAGES.c.turn == turn)
        .order_by(MESSAGES.c.seq)
    )
    return [json.loads(row[0]) for row in connection.execute(statement).all()]


def stored_range(
    connection: Connection, conversation: Conversation, start: int, end: int
) -> list[dict[str, Any]]:
    """The bodies of the stored messages with `start <= seq < end`, oldest first."""
    return read_bodies(connection, conversation.pk, start, end)


def messages_before_turn(connection: Connection, conversation: Conversation, turn: int) -> int | None:
    """How many messages were stored before a turn (its first message's 0-based seq); None if it has none."""
    statement = select(func.min(MESSAGES.c.seq)).where(
        MESSAGES.c.conversation_pk == conversation.pk, MESSAGES.c.turn == turn
    )
    value = connection.execute(statement).scalar_one_or_none()
    return None if value is None else int(value)


def delete_conversation(connection: Connection, conversation: Conversation) -> None:
    """Remove a conversation and its messages; its request-log rows keep usage but lose their content."""
    connection.execute(delete(MESSAGES).where(MESSAGES.c.conversation_pk == conversation.pk))
    connection.execute(delete(CONVERSATIONS).where(CONVERSATIONS.c.pk == conversation.pk))
    connection.execute(  # its responses lose their history: they can be neither continued nor read
        delete(RESPONSES).where(
            RESPONSES.c.owner == conversation.owner, RESPONSES.c.conversation_id == conversation.id
        )
    )
    connection.execute(
        update(ATTEMPTS)
        .where(ATTEMPTS.c.owner == conversation.owner, ATTEMPTS.c.conversation_id == conversation.id)
        .values(
            response_body=None, fingerprint=None, error=None, idempotency_key=None, conversation_deleted=True
        )
    )

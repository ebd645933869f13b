"""The request log: one row per upstream call, with its usage and cost; aggregates for the reports."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    SQLColumnExpression,
    and_,
    case,
    func,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from gateway.attempts import ATTEMPT_FIELDS, AttemptRecord
from gateway.reports import CallStats, Group, Totals, UsageQuery, day_key, fold, rank_index
from gateway.store import statements
from gateway.store.rows import load_first
from gateway.store.tables import ATTEMPTS, TIMED, Attempt, Conversation

# Texts taken from the upstream's answer (model name, request id, error message) are not the gateway's to
# trust: they are made to fit their columns so that a strange answer cannot fail the write.
_LENGTHS = {column.name: getattr(column.type, "length", None) for column in ATTEMPTS.columns}
_UNTRUSTED_TEXT = ("response_model", "upstream_request_id", "error", "endpoint", "model")


def _fit(text: str, length: int | None) -> str:
    text = text.replace("\x00", "")  # Postgres text cannot hold NUL
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \\u escape
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:length] if length is not None else text


class utc_day(FunctionElement[int]):  # lowercase like the SQL functions it stands for
    """SQL: the UTC day number (days since 1970-01-01) of a Unix-seconds column."""

    type = Integer()
    inherit_cache = True


@compiles(utc_day)
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # CAST truncates toward zero, which is the floor for the positive timestamps the log holds.
    return f"CAST({compiler.process(element.clauses, **kw)} / 86400 AS INTEGER)"


@compiles(utc_day, "postgresql")
def _utc_day_postgres(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # CAST rounds in Postgres, so floor first.
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)} / 86400) AS INTEGER)"


_INSERT_ATTEMPT = ATTEMPTS.insert()
_ATTEMPT_VALUES = operator.attrgetter(*ATTEMPT_FIELDS)


def attempt_row(record: AttemptRecord) -> dict[str, Any]:
    """The request-log row to insert for `record` (which stays as it is), texts made to fit their columns."""
    row = dict(zip(ATTEMPT_FIELDS, _ATTEMPT_VALUES(record), strict=True))
    for name in _UNTRUSTED_TEXT:
        value = row[name]
        if isinstance(value, str):
            row[name] = _fit(value, _LENGTHS.get(name))
    return row


def insert_attempt(connection: Connection, record: AttemptRecord) -> None:
    """Insert one request-log row (the caller's unit of work decides when it commits)."""
    statements.execute(connection, _INSERT_ATTEMPT, attempt_row(record))


# The model reports use: the one the upstream returned (a dated name), else the one asked for.
_MODEL = func.coalesce(ATTEMPTS.c.response_model, ATTEMPTS.c.model)
_REPORTED = ATTEMPTS.c.prompt_tokens.is_not(None)
_SUMMARY = ATTEMPTS.c.kind == "summary"


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _sum(column: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(column), 0)


# In the order of reports.Totals' fields.
_TOTALS: tuple[ColumnElement[Any], ...] = (
    func.count(),
    func.count(ATTEMPTS.c.prompt_tokens),
    func.count(ATTEMPTS.c.cost_pusd),
    _count_where(and_(_REPORTED, ATTEMPTS.c.cost_pusd.is_(None))),
    _sum(ATTEMPTS.c.prompt_tokens),
    _sum(ATTEMPTS.c.completion_tokens),
    _sum(ATTEMPTS.c.cached_tokens),
    _sum(ATTEMPTS.c.reasoning_tokens),
    # History tokens count where usage was reported, so that they stay a part of prompt_tokens.
    _sum(case((_REPORTED, ATTEMPTS.c.history_tokens), else_=None)),
    _sum(ATTEMPTS.c.cost_pusd),
    func.count(ATTEMPTS.c.history_cost_pusd),
    _sum(ATTEMPTS.c.history_cost_pusd),
    _sum(ATTEMPTS.c.cache_write_tokens),
    _count_where(_SUMMARY),
    _sum(
        case((and_(_SUMMARY, _REPORTED), ATTEMPTS.c.prompt_tokens + ATTEMPTS.c.completion_tokens), else_=None)
    ),
    _count_where(and_(_SUMMARY, ATTEMPTS.c.cost_pusd.is_not(None))),
    _sum(case((_SUMMARY, ATTEMPTS.c.cost_pusd), else_=None)),
    func.count(ATTEMPTS.c.full_replay_cost_pusd),
    _sum(ATTEMPTS.c.full_replay_cost_pusd),
    _count_where(ATTEMPTS.c.estimated.is_(True)),
)


def _key(group_by: str | None) -> SQLColumnExpression[Any] | None:
    if group_by == "conversation":
        return ATTEMPTS.c.conversation_id
    if group_by == "model":
        return _MODEL
    if group_by == "day":
        return utc_day(ATTEMPTS.c.created_at)
    if group_by == "caller":
        return ATTEMPTS.c.owner
    # The dashboard's own groupings (not offered by the API): a caller's conversation, a turn.
    if group_by == "caller_conversation":
        return ATTEMPTS.c.owner + ":" + ATTEMPTS.c.conversation_id
    if group_by == "turn":
        return ATTEMPTS.c.turn
    return None


def _filters(query: UsageQuery) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if query.owner is not None:
        filters.append(ATTEMPTS.c.owner == query.owner)
    if query.conversation_id is not None:
        filters.append(ATTEMPTS.c.conversation_id == query.conversation_id)
    if query.conversation_ids is not None:
        filters.append(ATTEMPTS.c.conversation_id.in_(query.conversation_ids))
    if query.current_only:
        filters.append(ATTEMPTS.c.conversation_deleted.is_(False))
    if query.since is not None:
        filters.append(ATTEMPTS.c.created_at >= query.since)
    if query.until is not None:
        filters.append(ATTEMPTS.c.created_at < query.until)
    if query.since is not None or query.until is not None:
        filters.append(TIMED)  # the (owner, created_at) index's condition (tables.py)
    return filters


def usage_groups(connection: Connection, query: UsageQuery) -> list[Group]:
    """Sum the matching request-log rows per group and model, in one GROUP BY query."""
    key = _key(query.group_by)
    grouping = [_MODEL] if key is None else [key, _MODEL]
    statement = select(*grouping, *_TOTALS).where(*_filters(query)).group_by(*grouping)
    rows = connection.execute(statement).all()
    found = []
    for row in rows:
        values = list(row)
        group = values.pop(0) if key is not None else None
        model = values.pop(0)
        if query.group_by == "day" and group is not None:
            group = day_key(int(group))
        elif query.group_by == "turn" and group is not None:
            group = str(int(group))
        found.append((group, model, Totals(*(int(v) for v in values))))
    return fold(found)


def conversation_usage(
    connection: Connection, conversations: Sequence[Conversation]
) -> dict[tuple[str, str], Mapping[str | None, Totals]]:
    """The usage per model of each of these (current) conversations, keyed by (owner, id): one grouped
    query for a whole page of conversations, never one per conversation."""
    if not conversations:
        return {}
    owners = {c.owner for c in conversations}
    query = UsageQuery(
        owner=next(iter(owners)) if len(owners) == 1 else None,
        conversation_ids=tuple(dict.fromkeys(c.id for c in conversations)),
        current_only=True,
        group_by="caller_conversation",
    )
    found: dict[tuple[str, str], Mapping[str | None, Totals]] = {}
    for group in usage_groups(connection, query):
        owner, _, conversation_id = (group.key or "").partition(":")  # an owner is hex: no ':' in it
        found[(owner, conversation_id)] = group.by_model
    return found


def call_stats(connection: Connection, query: UsageQuery) -> CallStats:
    """Requests, failed requests (status 400 and up) and the latency percentiles of the matching rows."""
    filters = _filters(query)
    counts = select(func.count(), _count_where(ATTEMPTS.c.status >= 400)).where(*filters)
    requests, errors = connection.execute(counts).one()
    percentiles: list[float | None] = []
    for percent in (50, 95):
        if not requests:
            percentiles.append(None)
            continue
        statement = (
            select(ATTEMPTS.c.latency_ms)
            .where(*filters)
            .order_by(ATTEMPTS.c.latency_ms)
            .offset(rank_index(int(requests), percent))
            .limit(1)
        )
        percentiles.append(float(connection.execute(statement).scalar_one()))
    return CallStats(int(requests), int(errors or 0), percentiles[0], percentiles[1])


def latest_attempt(connection: Connection, owner: str, conversation_id: str) -> Attempt | None:
    """The conversation's most recent request-log row (stored turn or failure), or None."""
    statement = (
        select(ATTEMPTS)
        .where(
            ATTEMPTS.c.owner == owner,
            ATTEMPTS.c.conversation_id == conversation_id,
            ATTEMPTS.c.conversation_deleted.is_(False),
            ATTEMPTS.c.kind != "summary",  # the gateway's own calls are never a turn to replay
        )
        .order_by(ATTEMPTS.c.pk.desc())
        .limit(1)
    )
    return load_first(connection, Attempt, statement)


def keyed_turn(
    connection: Connection, owner: str, conversation_id: str, key: str, since: float
) -> Attempt | None:
    """The newest stored turn of the conversation recorded with this Idempotency-Key since `since`."""
    statement = (
        select(ATTEMPTS)
        .where(
            ATTEMPTS.c.owner == owner,
            ATTEMPTS.c.idempotency_key == key,
            ATTEMPTS.c.conversation_id == conversation_id,
            ATTEMPTS.c.turn.is_not(None),
            ATTEMPTS.c.response_body.is_not(None),
            ATTEMPTS.c.created_at >= since,
        )
        .order_by(ATTEMPTS.c.pk.desc())
        .limit(1)
    )
    return load_first(connection, Attempt, statement)


def turn_attempt(connection: Connection, owner: str, conversation_id: str, turn: int) -> Attempt | None:
    """The request-log row that stored this turn of the caller's current conversation, or None."""
    statement = (
        select(ATTEMPTS)
        .where(
            ATTEMPTS.c.owner == owner,
            ATTEMPTS.c.conversation_id == conversation_id,
            ATTEMPTS.c.conversation_deleted.is_(False),
            ATTEMPTS.c.turn == turn,
        )
        .order_by(ATTEMPTS.c.pk.desc())
        .limit(1)
    )
    return load_first(connection, Attempt, statement)


def has_calls(connection: Connection, owner: str) -> bool:
    """True when the caller has at least one request-log row (an upstream accepted its token once)."""
    statement = select(ATTEMPTS.c.pk).where(ATTEMPTS.c.owner == owner).limit(1)
    return connection.execute(statement).first() is not None

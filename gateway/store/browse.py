"""The dashboard's conversation list: search by id, sort by cost, last update or length, page by page."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from gateway.store.rows import load_all
from gateway.store.tables import ATTEMPTS, CONVERSATIONS, LISTED, Conversation

SORTS = ("updated", "cost", "length")


def _where(owner: str | None, search: str | None) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = [LISTED]
    if owner is not None:
        filters.append(CONVERSATIONS.c.owner == owner)
    if search:
        filters.append(func.lower(CONVERSATIONS.c.id).contains(search.lower(), autoescape=True))
    return filters


def _cost_by_conversation(owner: str | None) -> Any:
    """Recorded cost (picodollars) per current conversation: the sum the usage API's cost_usd makes."""
    statement = (
        select(
            ATTEMPTS.c.owner, ATTEMPTS.c.conversation_id, func.sum(ATTEMPTS.c.cost_pusd).label("cost_pusd")
        )
        .where(ATTEMPTS.c.conversation_id.is_not(None), ATTEMPTS.c.conversation_deleted.is_(False))
        .group_by(ATTEMPTS.c.owner, ATTEMPTS.c.conversation_id)
    )
    if owner is not None:
        statement = statement.where(ATTEMPTS.c.owner == owner)
    return statement.subquery()


def browse_conversations(
    connection: Connection, owner: str | None, *, search: str | None, sort: str, offset: int, limit: int
) -> tuple[list[Conversation], int]:
    """One page of conversations (of `owner`, or of everyone for None) and how many match in all.

    `sort`: `updated` (newest activity first), `cost` (most expensive first; no known cost counts 0) or
    `length` (most stored messages first); ties go to the newest activity.
    """
    filters = _where(owner, search)
    counted = select(func.count()).select_from(CONVERSATIONS).where(*filters)
    total = connection.execute(counted).scalar_one()
    statement = select(CONVERSATIONS).where(*filters)
    newest = (CONVERSATIONS.c.updated_at.desc(), CONVERSATIONS.c.pk.desc())
    if sort == "cost":
        costs = _cost_by_conversation(owner)
        statement = statement.outerjoin(
            costs, (costs.c.owner == CONVERSATIONS.c.owner) & (costs.c.conversation_id == CONVERSATIONS.c.id)
        ).order_by(func.coalesce(costs.c.cost_pusd, 0).desc(), *newest)
    elif sort == "length":
        statement = statement.order_by(CONVERSATIONS.c.message_count.desc(), *newest)
    else:
        statement = statement.order_by(*newest)
    rows = load_all(connection, Conversation, statement.offset(offset).limit(limit))
    return rows, int(total)

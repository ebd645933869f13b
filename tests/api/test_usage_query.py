"""The usage query in process on real databases (SQLite and Postgres): days, bounds, scope, deletes."""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection

from gateway.reports import Report, Totals, UsageQuery, usage_object
from gateway.store.conversations import create_conversation, delete_conversation
from gateway.store.database import Database
from gateway.store.tables import Conversation
from gateway.store.usage import conversation_usage, usage_groups
from tests.helpers import insert_log_rows, migrated_database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated_database(database_url) as database:
        yield database


@pytest.fixture
def owner() -> str:
    return secrets.token_hex(32)


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def row(owner: str, created_at: float, **values: Any) -> dict[str, Any]:
    """A request-log row of a priced call that reported usage, unless `values` say otherwise."""
    base = {
        "owner": owner,
        "conversation_id": None,
        "request_id": secrets.token_hex(8),
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "stream": False,
        "status": 200,
        "latency_ms": 1.0,
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "history_tokens": 40,
        "cost_pusd": 21_000_000,
        "history_cost_pusd": 6_000_000,
        "created_at": created_at,
    }
    return base | values


NO_USAGE: dict[str, Any] = {
    "prompt_tokens": None,
    "completion_tokens": None,
    "cached_tokens": None,
    "reasoning_tokens": None,
    "cost_pusd": None,
    "history_cost_pusd": None,
    "status": 500,
}


async def insert(db: Database, *rows: dict[str, Any]) -> None:
    def unit(connection: Connection) -> None:
        for values in rows:
            insert_log_rows(connection, values)

    await db.run(unit)


async def report(db: Database, **query: Any) -> dict[str, Any]:
    groups = await db.run(functools.partial(usage_groups, query=UsageQuery(**query)))
    return {g.key: usage_object(g.by_model) for g in groups}


async def test_days_are_utc_and_floored(db: Database, owner: str) -> None:
    await insert(
        db,
        row(owner, at("2024-05-01T00:00:00+00:00")),
        row(owner, at("2024-05-01T23:59:59.999+00:00")),  # Postgres would round this up without FLOOR
        row(owner, at("2024-05-02T01:30:00+02:00")),  # 23:30 UTC the day before
        row(owner, at("2024-05-02T00:00:00+00:00")),
    )
    days = await report(db, owner=owner, group_by="day")
    assert {key: value["requests"] for key, value in days.items()} == {"2024-05-01": 3, "2024-05-02": 1}


async def test_since_is_inclusive_and_until_exclusive(db: Database, owner: str) -> None:
    times = [at(f"2024-06-0{d}T12:00:00+00:00") for d in (1, 2, 3)]
    await insert(db, *(row(owner, t) for t in times))
    assert (await report(db, owner=owner, since=times[1]))[None]["requests"] == 2
    assert (await report(db, owner=owner, until=times[1]))[None]["requests"] == 1
    assert (await report(db, owner=owner, since=times[0], until=times[2]))[None]["requests"] == 2
    assert await report(db, owner=owner, since=times[2] + 1) == {}


async def test_owner_none_is_every_caller(db: Database, owner: str) -> None:
    other = secrets.token_hex(32)
    conversation = f"c-{secrets.token_hex(4)}"
    stamp = at("2024-07-01T00:00:00+00:00")
    await insert(
        db, row(owner, stamp, conversation_id=conversation), row(other, stamp, conversation_id=conversation)
    )
    mine = await report(db, owner=owner, conversation_id=conversation)
    everyone = await report(db, conversation_id=conversation)
    assert mine[None]["requests"] == 1 and everyone[None]["requests"] == 2


async def test_sums_nulls_and_models(db: Database, owner: str) -> None:
    stamp = at("2024-08-01T00:00:00+00:00")
    await insert(
        db,
        row(owner, stamp, cost_pusd=5 * 10**15, history_cost_pusd=10**15),  # $5000: BIGINT sums
        row(
            owner, stamp, cost_pusd=5 * 10**15, history_cost_pusd=10**15, cached_tokens=64, reasoning_tokens=8
        ),
        row(owner, stamp, model="gpt-4o-mini", response_model=None, **NO_USAGE),
        row(
            owner,
            stamp,
            model="local-llama",
            response_model="local-llama",
            cost_pusd=None,
            history_cost_pusd=None,
        ),
        row(
            owner, stamp, model=None, response_model=None, endpoint="/v1/models", **NO_USAGE, history_tokens=0
        ),
    )
    totals = (await report(db, owner=owner))[None]
    assert totals["requests"] == 5
    assert (
        totals["prompt_tokens"] == 300 and totals["completion_tokens"] == 30 and totals["total_tokens"] == 330
    )
    assert totals["cached_tokens"] == 64 and totals["reasoning_tokens"] == 8
    assert totals["history_tokens"] == 120  # the calls without usage are not in it
    assert totals["cost_usd"] == 10_000
    assert totals["history_cost_usd"] == 2_000
    assert totals["unpriced_requests"] == 1 and totals["unreported_usage_requests"] == 2
    by_model = {m["model"]: m for m in totals["by_model"]}
    assert list(by_model) == ["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "local-llama", None]
    assert by_model["gpt-4o-mini"]["cost_usd"] is None and by_model["gpt-4o-mini"]["prompt_tokens"] is None
    assert by_model["local-llama"]["cost_usd"] is None and by_model["local-llama"]["prompt_tokens"] == 100
    models = await report(db, owner=owner, group_by="model")
    assert list(models) == ["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "local-llama", None]
    assert models["gpt-4o-mini-2024-07-18"]["requests"] == 2


async def test_a_deleted_conversation_leaves_its_usage_to_reports_only(db: Database, owner: str) -> None:
    conversation_id = f"c-{secrets.token_hex(4)}"
    stamp = at("2024-09-01T00:00:00+00:00")
    await insert(db, row(owner, stamp, conversation_id=conversation_id))
    conversation = await db.run(lambda c: create_conversation(c, owner, conversation_id, {}, stamp))
    await db.run(functools.partial(delete_conversation, conversation=conversation))
    await insert(db, row(owner, stamp + 60, conversation_id=conversation_id, cost_pusd=1))
    current = await report(db, owner=owner, conversation_id=conversation_id, current_only=True)
    assert current[None]["requests"] == 1 and current[None]["cost_usd"] == Decimal("1E-12")
    everything = await report(db, owner=owner, conversation_id=conversation_id)
    assert everything[None]["requests"] == 2
    by_conversation = await report(db, owner=owner, group_by="conversation")
    assert by_conversation[conversation_id]["requests"] == 2


async def test_an_empty_report(db: Database) -> None:
    groups = await db.run(functools.partial(usage_groups, query=UsageQuery(owner="nobody", group_by="day")))
    assert groups == []
    assert usage_object(Report(groups).by_model)["requests"] == 0
    assert Report(groups).by_model == {} and Totals() == sum((), Totals())


async def test_a_page_of_conversations_takes_one_grouped_query_with_the_same_figures(
    db: Database, owner: str
) -> None:
    """A page of conversations (GET /v1/conversations, the dashboard's list) reads its usage at once: the
    same figures as one query per conversation, each caller's own."""
    stamp = at("2024-05-01T12:00:00")
    ids = ["p-one", "p-two", "p-idle", "p-renewed"]
    await insert(db, row(owner, stamp, conversation_id="p-one"))
    await insert(db, row(owner, stamp, conversation_id="p-one", model="o3-mini", response_model=None))
    await insert(db, row(owner, stamp, conversation_id="p-two", prompt_tokens=None, cost_pusd=None))
    await insert(db, row(owner, stamp, conversation_id="p-renewed"))
    await insert(db, row("someone-else", stamp, conversation_id="p-one"))
    earlier = await db.run(lambda c: create_conversation(c, owner, "p-renewed", {}, stamp))
    # its usage is not the new conversation's
    await db.run(functools.partial(delete_conversation, conversation=earlier))
    await insert(db, row(owner, stamp + 60, conversation_id="p-renewed", cost_pusd=7))
    for owners in ([owner], [owner, "someone-else"]):
        page = [Conversation(owner=who, id=conversation_id) for who in owners for conversation_id in ids]
        grouped = await db.run(functools.partial(conversation_usage, conversations=page))
        for conversation in page:
            one = UsageQuery(owner=conversation.owner, conversation_id=conversation.id, current_only=True)
            alone = Report(await db.run(functools.partial(usage_groups, query=one))).by_model
            key = (conversation.owner, conversation.id)
            assert usage_object(grouped.get(key, {})) == usage_object(alone), key
    expected = {(owner, "p-one"), (owner, "p-two"), (owner, "p-renewed"), ("someone-else", "p-one")}
    assert set(grouped) == expected
    assert usage_object(grouped[(owner, "p-renewed")])["cost_usd"] == Decimal("7E-12")

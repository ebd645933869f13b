"""Listing conversations (the API, the dashboard, the CLI) reads a whole page's usage in one grouped query:
the statements a page takes do not grow with the number of conversations on it."""

from __future__ import annotations

import contextlib
import functools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event

from gateway.api.conversations import list_page as api_page
from gateway.store.conversations import create_conversation, list_conversations
from gateway.store.database import Database
from gateway.ui.conversations import list_page as dashboard_page
from gateway.ui.signin import Viewer
from tests.helpers import insert_log_rows, migrated_database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated_database(database_url) as database:
        yield database


@contextlib.contextmanager
def counted() -> Iterator[list[str]]:
    """The SQL statements every engine (the SQLite lane's included) executes meanwhile."""
    seen: list[str] = []

    def count(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def seed(connection: Connection, owner: str, conversations: int) -> None:
    """`conversations` conversations of `owner`, each with two calls in the request log."""
    for n in range(conversations):
        conversation_id = f"conv-{n}"
        create_conversation(connection, owner, conversation_id, {}, 100.0 + n)
        for model in ("m-a", "m-b"):
            insert_log_rows(
                connection,
                {
                    "owner": owner,
                    "conversation_id": conversation_id,
                    "request_id": secrets.token_hex(8),
                    "endpoint": "/v1/chat/completions",
                    "model": model,
                    "status": 200,
                    "latency_ms": 1.0,
                    "prompt_tokens": 10,
                    "completion_tokens": 5,
                    "cost_pusd": 1000 + n,
                    "created_at": 100.0 + n,
                },
            )


async def statements_per_page(db: Database, conversations: int) -> dict[str, int]:
    """How many statements each listing takes for a page of `conversations` conversations."""
    owner = secrets.token_hex(32)
    await db.run(functools.partial(seed, owner=owner, conversations=conversations))
    caller, admin = Viewer(owner, False, None, "csrf"), Viewer(secrets.token_hex(32), True, None, "csrf")
    dashboard = functools.partial(dashboard_page, admin=admin.identity, search="", sort="updated", number=1)
    pages: dict[str, Callable[[Connection], Any]] = {
        "api": functools.partial(api_page, owner=owner, after_id=None, limit=100),
        "dashboard": functools.partial(dashboard, viewer=caller),
        "dashboard by cost": functools.partial(dashboard, viewer=caller, sort="cost"),
        "dashboard, admin": functools.partial(dashboard, viewer=admin),
        "cli": functools.partial(list_conversations, owner=None, limit=101, owner_prefix=owner),
    }
    counts = {}
    for name, unit in pages.items():
        with counted() as seen:
            listed = await db.run(unit)
        rows = listed if name == "cli" else listed[0]
        assert len(rows) >= conversations, name
        if name != "dashboard, admin":
            usage = {} if name == "cli" else listed[2]
            assert name == "cli" or len(usage) == conversations, name  # every conversation's usage was read
        counts[name] = len(seen)
    return counts


async def test_a_page_of_conversations_takes_the_same_statements_for_2_or_20_conversations(
    db: Database,
) -> None:
    few = await statements_per_page(db, 2)
    many = await statements_per_page(db, 20)
    assert few == many
    # the page, then its usage in one grouped query (the dashboard counts the matches first; the admin's
    # page also names the callers: the keys, here none); the CLI shows no usage
    assert many == {"api": 2, "dashboard": 3, "dashboard by cost": 3, "dashboard, admin": 4, "cli": 1}

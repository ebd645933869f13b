"""The window cache (store/window_cache.py): its answers equal the window query's, and it is never stale."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import migrate
from gateway.history import Budget, BudgetRule, StoredMessage, number_messages
from gateway.store.conversations import TurnWrite, delete_conversation, get_conversation, read_window
from gateway.store.database import Database, open_database
from gateway.store.tables import Conversation
from gateway.store.window_cache import MESSAGE_BYTES, WINDOW_BYTES, CachedWindow, WindowCache, window_from
from tests.helpers import logged_call
from tests.history_strategies import stored_histories
from tests.store.test_window import drawn_case, stored_conversation

EVERYTHING = Budget(None, None)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory, runner: asyncio.Runner) -> Iterator[Database]:
    path = tmp_path_factory.mktemp("window") / "cache.db"
    database = open_database(f"sqlite+aiosqlite:///{path}", lease_seconds=60)
    runner.run(migrate.upgrade(database))
    yield database
    runner.run(database.close())


@settings(max_examples=60, deadline=None)
@given(stored=stored_histories(), data=st.data())
def test_a_cached_suffix_answers_exactly_as_the_window_query_or_not_at_all(
    sqlite_db: Database, runner: asyncio.Runner, stored: list[StoredMessage], data: st.DataObject
) -> None:
    cuts, tried = drawn_case(stored, data)

    async def check() -> None:
        conversation = await stored_conversation(sqlite_db, stored, cuts)
        if conversation is None:
            return
        every = await sqlite_db.run(lambda c: read_window(c, conversation, EVERYTHING))
        assert [m.seq for m in every] == list(range(conversation.message_count))
        for budget in tried:
            expected = await sqlite_db.run(lambda c, budget=budget: read_window(c, conversation, budget))
            for kept in sorted({1, len(expected), len(expected) + 1, len(every) // 2, len(every)}):
                if not 0 < kept <= len(every):
                    continue
                cached = CachedWindow.of(conversation, every[-kept:], kept)
                answer = window_from(cached, conversation, budget)
                if kept == len(every) or (expected and kept >= len(expected) + 1):
                    assert answer is not None, (budget, kept)  # it holds the answer: it gives it
                if answer is not None:
                    assert [m.seq for m in answer] == [m.seq for m in expected], (budget, kept)

    runner.run(check())


def conversation_like(cached: CachedWindow, **changes: object) -> Conversation:
    values: dict[str, object] = {
        "pk": cached.pk, "owner": "o", "id": "c", "message_count": cached.count, "token_count": 10**6,
        "created_at": cached.created_at, "updated_at": cached.created_at,
    }  # fmt: skip
    values.update(changes)
    return Conversation(**values)  # type: ignore[arg-type]


def numbered(count: int, text: str = "x") -> list[StoredMessage]:
    bodies = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{text}{i}"} for i in range(count)]
    return number_messages(
        bodies, [5] * count, next_seq=0, token_total=0, last_user_seq=0, last_user_tokens=0
    )


def test_another_conversation_state_is_never_answered_from_the_cache() -> None:
    cached = CachedWindow(7, 1.5, 4, tuple(numbered(4)), 40)
    budget = Budget(max_messages=2)
    assert window_from(cached, conversation_like(cached), budget) is not None
    assert window_from(cached, conversation_like(cached, message_count=5), budget) is None  # written since
    assert window_from(cached, conversation_like(cached, pk=8), budget) is None
    assert (
        window_from(cached, conversation_like(cached, created_at=2.5), budget) is None
    )  # deleted, made again


def test_a_window_counts_the_memory_of_its_text_not_its_length() -> None:
    wide = CachedWindow.made(1, 1.0, 1, tuple(numbered(1, "\u6f22" * 1000))).size
    narrow = CachedWindow.made(1, 1.0, 1, tuple(numbered(1, "x" * 1000))).size
    assert wide > narrow + 900  # two bytes a character


def test_the_cache_keeps_its_bounds_and_drops_the_least_recently_stored() -> None:
    messages = tuple(numbered(10))
    newest = CachedWindow.made(0, 1.0, 10, messages[-6:]).size
    assert newest == WINDOW_BYTES + sum(sys.getsizeof(m.json) + MESSAGE_BYTES for m in messages[-6:])
    cache = WindowCache(max_bytes=2 * newest + 1, max_messages=6)
    for index in range(3):
        cache.put(("o", f"c{index}"), CachedWindow.made(index, 1.0, 10, messages))
    assert len(cache) == 2 and cache.get(("o", "c0")) is None  # its room went to the third
    kept = cache.get(("o", "c2"))
    assert kept is not None and [m.seq for m in kept.messages] == [4, 5, 6, 7, 8, 9]  # the newest six
    assert kept.size == newest and cache.size == 2 * newest
    grown = kept.extended(numbered(12)[10:], 6)
    assert [m.seq for m in grown.messages] == [6, 7, 8, 9, 10, 11] and grown.count == 12
    assert grown.size == CachedWindow.made(2, 1.0, 12, grown.messages).size
    alone = WindowCache(max_bytes=newest - 1, max_messages=6)
    alone.put(("o", "big"), CachedWindow.made(9, 1.0, 10, messages))  # beyond the bound on its own
    assert alone.get(("o", "big")) is None and alone.size == 0


@pytest.fixture
async def two_processes(tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    """Two gateways' databases on one SQLite file: each has its own cache."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    first, second = open_database(url, lease_seconds=30), open_database(url, lease_seconds=30)
    await migrate.upgrade(first)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


RULE = BudgetRule(header=Budget(None, None), default=Budget(None, None))


async def turn(db: Database, owner: str, conversation_id: str, text: str) -> list[str]:
    """One turn through the store as TurnService runs it: the contents of the window it read, then stored."""
    async with db.open_turn(owner, conversation_id, wait=5, budget=RULE) as opened:
        conversation = opened.conversation
        window = [m.body["content"] for m in opened.candidates]
        bodies = [{"role": "user", "content": text}, {"role": "assistant", "content": f"re: {text}"}]
        count = conversation.message_count if conversation else 0
        messages = number_messages(
            bodies,
            [5, 5],
            next_seq=count,
            token_total=conversation.token_count if conversation else 0,
            last_user_seq=conversation.last_user_seq if conversation else 0,
            last_user_tokens=conversation.last_user_tokens if conversation else 0,
        )
        number = (conversation.turn_count if conversation else 0) + 1
        write = TurnWrite(owner, conversation_id, None, False, messages, number, f"d{number}", float(number))
        await opened.store(write, logged_call(owner, conversation_id))
    return window


async def test_a_turn_stored_by_another_process_is_read_not_missed(
    two_processes: tuple[Database, Database],
) -> None:
    first, second = two_processes
    assert await turn(first, "o", "c", "one") == []
    assert await turn(first, "o", "c", "two") == ["one", "re: one"]
    assert first.windows is not None and first.windows.get(("o", "c")) is not None  # served from memory
    assert await turn(second, "o", "c", "three") == ["one", "re: one", "two", "re: two"]
    expected = ["one", "re: one", "two", "re: two", "three", "re: three"]
    assert await turn(first, "o", "c", "four") == expected  # the other process's turn is in it
    assert await turn(first, "o", "c", "five") == [*expected, "four", "re: four"]


async def test_a_conversation_deleted_and_made_again_is_not_answered_from_the_old_cache(
    two_processes: tuple[Database, Database],
) -> None:
    first, second = two_processes
    await turn(first, "o", "c", "old")
    await turn(first, "o", "c", "older")
    gone = await second.run(functools.partial(get_conversation, owner="o", conversation_id="c"))
    assert gone is not None
    await second.run(functools.partial(delete_conversation, conversation=gone))
    await turn(second, "o", "c", "new")  # the same id again (and on SQLite, perhaps the same pk)
    assert await turn(first, "o", "c", "next") == ["new", "re: new"]

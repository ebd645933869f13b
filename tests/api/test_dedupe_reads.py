"""What the dedupe reads: nothing for a new message or a whole-history resend; a bounded tail otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

import gateway.turns
from gateway.store.conversations import read_bodies
from gateway.store.tables import CONVERSATIONS
from tests.inprocess import InProcess, inprocess_gateway

KEY = "sk-dedupe-reads"
# a budget of the two newest messages, trimmed as a sliding window (exact counts whatever the server default)
SLIDING_2 = {"X-Max-History-Messages": "2", "X-History-Strategy": "sliding"}


@pytest.fixture
async def gw(tmp_path: Path, database_url: str) -> AsyncIterator[InProcess]:
    """The gateway in process in front of the mock upstream, on each database backend."""
    async with inprocess_gateway(tmp_path, database_url=database_url) as running:
        yield running


@pytest.fixture
def tail_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `count` of every stored-tail read the turn service makes."""
    counts: list[int] = []

    def counting(connection: Any, conversation_pk: int, first: int, end: int) -> list[dict[str, Any]]:
        counts.append(end - first)
        return read_bodies(connection, conversation_pk, first, end)

    monkeypatch.setattr(gateway.turns, "read_bodies", counting)
    return counts


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def turn(gw: InProcess, messages: list[dict[str, Any]], conversation: str, **headers: str) -> str:
    async with gw.sdk(KEY, conversation, **headers) as client:
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    return reply.choices[0].message.content or ""


async def seed(gw: InProcess, conversation: str) -> list[dict[str, Any]]:
    """Three turns sent one new message at a time; returns the history as stored."""
    history: list[dict[str, Any]] = []
    for text in ("one", "two", "three"):
        history += [user(text), {"role": "assistant", "content": await turn(gw, [user(text)], conversation)}]
    return history


async def test_new_messages_and_whole_history_resends_read_no_tail(
    gw: InProcess, tail_reads: list[int]
) -> None:
    history = await seed(gw, "c1")
    assert await turn(gw, [*history, user("four")], "c1") == "[7 messages] four"
    assert await turn(gw, [user("five")], "c1") == "[9 messages] five"
    assert tail_reads == []


async def test_a_window_the_budget_left_out_is_found_by_one_bounded_read(
    gw: InProcess, tail_reads: list[int]
) -> None:
    history = await seed(gw, "c2")
    # the budget sends no history at all, yet the resent window is recognized against the stored one
    reply = await turn(gw, [*history[-4:], user("four")], "c2", **{"X-Max-History-Messages": "0"})
    assert (
        reply == "[1 messages] four"
    )  # the resent window is already stored, and the budget sends none of it
    assert tail_reads == [5]
    assert gw.last_upstream_messages() == [user("four")]


async def test_a_digest_of_an_older_form_is_healed_by_the_first_full_resend(
    gw: InProcess, tail_reads: list[int], database_url: str
) -> None:
    conversation = "c3"
    history = await seed(gw, conversation)
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(CONVERSATIONS)
                .where(CONVERSATIONS.c.id == conversation)
                .values(history_hash="older-form")
            )
    finally:
        await engine.dispose()
    # the budget sends 2 stored messages, so the 6 resent ones are read back to be compared
    reply = await turn(gw, [*history, user("four")], conversation, **SLIDING_2)
    assert reply == "[3 messages] four"
    assert tail_reads == [6]
    history += [user("four"), {"role": "assistant", "content": reply}]
    reply = await turn(gw, [*history, user("five")], conversation, **SLIDING_2)
    assert reply == "[3 messages] five"
    assert tail_reads == [6]  # the digest was healed: no read the second time


async def test_a_retried_window_is_answered_from_the_request_log(gw: InProcess) -> None:
    conversation = "c4"
    history = await seed(gw, conversation)
    request = [*history[-4:], user("four")]
    assert await turn(gw, request, conversation) == "[7 messages] four"
    calls = len(gw.upstream_bodies())
    # the SDK's own retry of that request (its retry header set by hand: the first answer was not lost here)
    async with gw.http_client() as http:
        headers = {"Authorization": f"Bearer {KEY}", "X-Conversation-Id": conversation}
        again = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": request},
            headers={**headers, "x-stainless-retry-count": "1"},
        )
    assert again.headers["x-gateway-replayed"] == "true"
    assert again.json()["choices"][0]["message"]["content"] == "[7 messages] four"
    assert len(gw.upstream_bodies()) == calls  # no second upstream call, no second turn

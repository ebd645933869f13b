"""Helpers of the scale-out, fault and retry tests: raw turns over httpx, stored state, the request log."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.store.tables import Attempt, Conversation, Message
from tests.servers import ServerProcess

MODEL = "gpt-4o-mini"


def turn_headers(api_key: str, conversation_id: str, **extra: str) -> dict[str, str]:
    """Authorization and X-Conversation-Id, plus any extra headers."""
    return {"Authorization": f"Bearer {api_key}", "X-Conversation-Id": conversation_id, **extra}


def turn_body(text: str, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A chat-completions body with one user message."""
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream, **extra}


def sse_payloads(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def stream_text(text: str) -> str:
    """The assistant content carried by an SSE body's chunks."""
    out = []
    for payload in sse_payloads(text):
        if payload == "[DONE]":
            continue
        for choice in json.loads(payload).get("choices") or ():
            out.append(choice.get("delta", {}).get("content") or "")
    return "".join(out)


def stored(gateway: ServerProcess, api_key: str, conversation_id: str) -> list[dict[str, Any]]:
    """The messages the gateway stored for a conversation ([] when it does not exist)."""
    response = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}/messages",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def message_count(gateway: ServerProcess, api_key: str, conversation_id: str) -> int:
    """The conversation's message_count as GET /v1/conversations/{id} reports it."""
    response = httpx.get(
        f"{gateway.url}/v1/conversations/{conversation_id}",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    count: int = response.json()["message_count"]
    return count


def assert_whole_turns(messages: list[dict[str, Any]]) -> None:
    """Every stored user message is followed by its reply, which saw exactly the history before it."""
    assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
    assert len(messages) % 2 == 0
    for index in range(0, len(messages), 2):
        # the mock answers "[N messages] <last user text>": N is the history it received plus the new message
        assert messages[index + 1]["content"] == f"[{index + 1} messages] {messages[index]['content']}"


def attempt_count(database_url: str, api_key: str, conversation_id: str) -> int:
    """How many request-log rows the conversation has, read straight from the database."""
    owner = hashlib.sha256(api_key.encode()).hexdigest()

    async def count() -> int:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                statement = select(func.count()).where(
                    Attempt.owner == owner, Attempt.conversation_id == conversation_id
                )
                return int((await connection.execute(statement)).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(count())


def stored_in_database(database_url: str, api_key: str, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's stored messages read straight from the database (no gateway needed)."""
    owner = hashlib.sha256(api_key.encode()).hexdigest()

    async def load() -> list[dict[str, Any]]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                statement = (
                    select(Message.body)
                    .join(Conversation, Conversation.pk == Message.conversation_pk)
                    .where(Conversation.owner == owner, Conversation.id == conversation_id)
                    .order_by(Message.seq)
                )
                return [json.loads(row[0]) for row in (await connection.execute(statement)).all()]
        finally:
            await engine.dispose()

    return asyncio.run(load())


@dataclass
class Outcome:
    """What the client saw of one turn: acknowledged means a 200 body, or a stream that reached [DONE]."""

    text: str
    stream: bool
    status: int | None = None
    acknowledged: bool = False
    error_code: str | None = None
    transport_error: str | None = None


async def send_turn(
    client: httpx.AsyncClient, base_url: str, api_key: str, conversation_id: str, text: str, *, stream: bool
) -> Outcome:
    """One turn over raw HTTP, recording exactly what the client received."""
    outcome = Outcome(text, stream)
    request = client.build_request(
        "POST",
        f"{base_url}/v1/chat/completions",
        json=turn_body(text, stream=stream),
        headers=turn_headers(api_key, conversation_id),
    )
    try:
        response = await client.send(request, stream=True)
        try:
            outcome.status = response.status_code
            if response.status_code != 200 or not stream:
                body = json.loads(await response.aread())
                outcome.acknowledged = response.status_code == 200 and "choices" in body
                outcome.error_code = None if outcome.acknowledged else body["error"]["code"]
                return outcome
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    outcome.acknowledged = True
                elif line.startswith('data: {"error"'):
                    outcome.error_code = json.loads(line[6:])["error"]["code"]
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        outcome.transport_error = type(exc).__name__
    return outcome


async def turn_loop(
    client: httpx.AsyncClient,
    base_url: str,
    api_key: str,
    conversation_id: str,
    stop: asyncio.Event,
    outcomes: list[Outcome],
    *,
    slow_ms: int = 30,
) -> None:
    """Send turns one after another (plain, then streamed, ...) until `stop` is set or the link breaks."""
    index = 0
    while not stop.is_set():
        text = f"FAULT:slow:{slow_ms} {conversation_id} turn {index}"
        outcome = await send_turn(client, base_url, api_key, conversation_id, text, stream=index % 2 == 1)
        outcomes.append(outcome)
        if outcome.transport_error is not None and "Connect" in outcome.transport_error:
            return
        if outcome.status == 503:
            await asyncio.sleep(0.05)
        index += 1


def check_conversation(messages: list[dict[str, Any]], outcomes: list[Outcome]) -> None:
    """Whole turns only, every acknowledged turn present in order, nothing stored that nobody sent."""
    assert_whole_turns(messages)
    users = [m["content"] for m in messages[::2]]
    acknowledged = [o.text for o in outcomes if o.acknowledged]
    assert [u for u in users if u in acknowledged] == acknowledged
    assert set(users) <= {o.text for o in outcomes}

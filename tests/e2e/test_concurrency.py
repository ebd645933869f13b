"""Turns of one conversation are serialized; other conversations and callers never wait or mix; busy: 409."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
from openai import AsyncOpenAI

from tests.helpers import (
    MODEL,
    auth,
    roles,
    sdk,
    stored,
    user,
)
from tests.servers import ServerProcess


async def test_concurrent_turns_on_one_conversation_are_serialized(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    client = AsyncOpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Conversation-Id": conversation_id},
    )
    async with client:
        replies = await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"FAULT:slow:20 n{i}"}]
                )
                for i in range(16)
            ]
        )
    counts = sorted(int(r.choices[0].message.content.split()[0][1:]) for r in replies)  # type: ignore[union-attr]
    assert counts == list(range(1, 32, 2))  # each turn saw every earlier one
    messages = stored(gateway, api_key, conversation_id)
    assert roles(messages) == ["user", "assistant"] * 16
    for index in range(16):
        assert messages[2 * index + 1]["content"].startswith(f"[{2 * index + 1} messages]")


def test_two_callers_are_isolated(gateway: ServerProcess, conversation_id: str) -> None:
    alice, bob = f"sk-alice-{secrets.token_hex(4)}", f"sk-bob-{secrets.token_hex(4)}"
    sdk(gateway, alice, conversation_id).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "alice here"}]
    )
    reply = sdk(gateway, bob, conversation_id).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "bob here"}]
    )
    assert reply.choices[0].message.content == "[1 messages] bob here"
    assert stored(gateway, alice, conversation_id)[0]["content"] == "alice here"
    assert stored(gateway, bob, conversation_id)[0]["content"] == "bob here"


def test_busy_conversation_gets_409_after_the_lock_wait(
    start_gateway: Callable[..., ServerProcess], tmp_path: Any, api_key: str, conversation_id: str
) -> None:
    server = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}", lock_timeout="0.5")
    slow = httpx.Client(timeout=30)

    def turn(text: str) -> httpx.Response:
        return slow.post(
            f"{server.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}", "X-Conversation-Id": conversation_id},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(turn, "FAULT:slow:3000")
        time.sleep(0.5)
        second = pool.submit(turn, "impatient")
        busy = second.result()
        assert first.result().status_code == 200
    slow.close()
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "conversation_busy"
    assert busy.json()["error"]["type"] == "conflict_error"
    assert len(stored(server, api_key, conversation_id)) == 2


def test_different_conversations_do_not_wait_for_a_slow_one(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    async def run() -> None:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
            slow = asyncio.create_task(
                http.post(
                    "/v1/chat/completions",
                    headers=auth(api_key, conversation_id),
                    json={"model": MODEL, "messages": [user("FAULT:slow:3000")]},
                )
            )
            await asyncio.sleep(0.3)
            fast = await http.post(
                "/v1/chat/completions",
                headers=auth(api_key, conversation_id + "-other"),
                json={"model": MODEL, "messages": [user("quick")]},
            )
            assert fast.status_code == 200 and not slow.done()  # answered while the slow turn is in flight
            assert (await slow).status_code == 200

    asyncio.run(run())


def test_sdk_retries_a_409_busy_turn_and_it_works(
    start_gateway: Callable[..., ServerProcess],
    tmp_path: Any,
    api_key: str,
    conversation_id: str,
) -> None:
    server = start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}", lock_timeout="1")
    slow = sdk(server, api_key, conversation_id, max_retries=0)
    patient = sdk(server, api_key, conversation_id, max_retries=2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(slow.chat.completions.create, model=MODEL, messages=[user("FAULT:slow:2000")])
        time.sleep(0.3)
        raw = patient.chat.completions.with_raw_response.create(model=MODEL, messages=[user("second")])
        first.result()
    assert raw.retries_taken >= 1  # it did get a 409 first
    assert raw.parse().choices[0].message.content == "[3 messages] second"
    assert [m["content"] for m in stored(server, api_key, conversation_id)][2:] == [
        "second",
        "[3 messages] second",
    ]

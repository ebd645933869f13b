"""Several gateway processes on one Postgres database: turns serialized per conversation, no global lock."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_ENV
from tests.helpers import assert_whole_turns, send_turn, stored, turn_body, turn_headers
from tests.servers import ServerProcess, base_env, gateway_server, upstream_requests


def needs_postgres(test: Callable[..., object]) -> Callable[..., object]:
    """Mark a test as needing the Postgres test server (skipped, with the reason, without it)."""
    reason = f"set {POSTGRES_ENV}=postgresql+asyncpg://user@127.0.0.1:5432/postgres to run"
    return pytest.mark.postgres(pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=reason)(test))


@pytest.fixture(scope="module")
def replicas(
    upstream: ServerProcess, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two gateway processes on one database; the second with a pool of only 2 (+2 overflow) connections.

    Both use a 1 s lease, renewed every third of a second, so a turn that outlives it shows the renewal.
    """
    tmp = tmp_path_factory.mktemp("replicas")
    first = gateway_server(tmp, upstream.url, postgres_url, lock_lease="1").start()
    try:
        second = gateway_server(tmp, upstream.url, postgres_url, lock_lease="1", db_pool_size="2").start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def reply_count(content: str) -> int:
    """N of the mock's "[N messages] ..." reply."""
    return int(content.split()[0][1:])


async def concurrent_turns(
    servers: list[ServerProcess], api_key: str, conversations: list[str], texts: list[str]
) -> list[httpx.Response]:
    """Send turn i (text i, conversation i) to server i % len(servers), all at once."""
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as client:
        return list(
            await asyncio.gather(
                *[
                    client.post(
                        f"{servers[i % len(servers)].url}/v1/chat/completions",
                        json=turn_body(text),
                        headers=turn_headers(api_key, conversations[i]),
                    )
                    for i, text in enumerate(texts)
                ]
            )
        )


@needs_postgres
async def test_turns_of_one_conversation_are_serialized_across_processes(
    replicas: tuple[ServerProcess, ServerProcess], upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    texts = [f"FAULT:slow:30 n{i}" for i in range(20)]
    responses = await concurrent_turns(list(replicas), api_key, [conversation_id] * 20, texts)
    assert [r.status_code for r in responses] == [200] * 20, [
        r.text for r in responses if r.status_code != 200
    ]
    counts = sorted(reply_count(r.json()["choices"][0]["message"]["content"]) for r in responses)
    assert counts == list(range(1, 40, 2))  # each turn saw every earlier one, whichever process ran it
    messages = stored(replicas[0], api_key, conversation_id)
    assert_whole_turns(messages)
    assert sorted(m["content"] for m in messages[::2]) == sorted(texts)  # every turn stored once
    sent = [len(r["body"]["messages"]) for r in upstream_requests(upstream, api_key)]
    assert sent == list(range(1, 40, 2))  # in arrival order at the upstream: strictly growing histories


@needs_postgres
async def test_fifty_conversations_run_in_parallel(
    replicas: tuple[ServerProcess, ServerProcess], api_key: str
) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        started = time.monotonic()
        single = await send_turn(
            client,
            replicas[0].url,
            api_key,
            f"one-{secrets.token_hex(4)}",
            "FAULT:slow:1000 alone",
            stream=False,
        )
        one_turn = time.monotonic() - started
    assert single.acknowledged
    conversations = [f"par-{secrets.token_hex(4)}-{n}" for n in range(50)]
    started = time.monotonic()
    responses = await concurrent_turns(list(replicas), api_key, conversations, ["FAULT:slow:1000 hi"] * 50)
    elapsed = time.monotonic() - started
    assert all(r.status_code == 200 for r in responses)
    assert elapsed < 10 * one_turn  # serialized, 50 turns would take at least 50 times one turn


@needs_postgres
async def test_a_small_pool_serves_more_conversations_than_connections(
    replicas: tuple[ServerProcess, ServerProcess], api_key: str
) -> None:
    # The second replica has GATEWAY_DB_POOL_SIZE=2: at most 4 connections for 20 concurrent slow turns,
    # each also waiting on a lease. No connection is held during the upstream call, so none waits forever.
    small = replicas[1]
    conversations = [f"pool-{secrets.token_hex(4)}-{n}" for n in range(20)]
    for _ in range(2):  # a first turn creates each conversation, a second one reads its history back
        responses = await concurrent_turns([small], api_key, conversations, ["FAULT:slow:500 hi"] * 20)
        assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
    assert all(len(stored(small, api_key, c)) == 4 for c in conversations)


@needs_postgres
def test_a_turn_longer_than_the_lease_keeps_the_conversation(
    replicas: tuple[ServerProcess, ServerProcess], upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    first, second = replicas
    with httpx.Client(timeout=30) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:

        def turn(server: ServerProcess, text: str) -> httpx.Response:
            return client.post(
                f"{server.url}/v1/chat/completions",
                json=turn_body(text),
                headers=turn_headers(api_key, conversation_id),
            )

        long = pool.submit(turn, first, "FAULT:slow:3000 long")  # three times the 1 s lease
        deadline = time.monotonic() + 20
        while not upstream_requests(upstream, api_key):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        waiting = turn(second, "meanwhile")
        assert long.result().status_code == 200
    # the second replica waited for the renewed lease instead of taking it over after 1 s
    assert waiting.json()["choices"][0]["message"]["content"] == "[3 messages] meanwhile"
    assert_whole_turns(stored(first, api_key, conversation_id))


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


@needs_postgres
async def test_workers_share_the_database(
    start_gateway: Callable[..., ServerProcess],
    postgres_url: str,
    upstream: ServerProcess,
    api_key: str,
    conversation_id: str,
) -> None:
    server = start_gateway(postgres_url, process=True, workers="2")
    assert server.process is not None
    assert len(child_pids(server.process.pid)) >= 2  # uvicorn's supervisor and its two worker processes
    texts = [f"FAULT:slow:30 w{i}" for i in range(10)]
    responses = await concurrent_turns([server], api_key, [conversation_id] * 10, texts)
    counts = sorted(reply_count(r.json()["choices"][0]["message"]["content"]) for r in responses)
    assert counts == list(range(1, 20, 2))
    assert_whole_turns(stored(server, api_key, conversation_id))


@pytest.mark.parametrize("how", [["--workers", "2"], ["--workers=3"], "env"])
def test_sqlite_refuses_several_workers(tmp_path: Path, how: list[str] | str) -> None:
    env = base_env()
    args = ["--database-url", f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"]
    if how == "env":
        env["GATEWAY_WORKERS"] = "2"
    else:
        args += how
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--workers above 1 needs Postgres" in result.stderr
    assert not (tmp_path / "one.db").exists()

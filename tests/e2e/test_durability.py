"""Durability: SIGKILL under load, graceful SIGTERM, and the database going away and coming back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import POSTGRES_ENV
from tests.helpers import (
    Outcome,
    auth,
    check_conversation,
    message_count,
    send_turn,
    stored,
    stored_in_database,
    turn_body,
    turn_headers,
    turn_loop,
)
from tests.pgcluster import PrivateCluster, postgres_bindir
from tests.servers import ServerProcess, upstream_requests


async def run_load(
    server: ServerProcess,
    api_key: str,
    conversations: list[str],
    during: Callable[[], object],
    outcomes: dict[str, list[Outcome]] | None = None,
    **options: int,
) -> dict[str, list[Outcome]]:
    """Run a turn loop per conversation, call `during()` (blocking, in a thread) meanwhile, then stop them.

    The loops append to `outcomes` (made here when not given), which `during` may watch."""
    outcomes = {c: [] for c in conversations} if outcomes is None else outcomes
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=30) as client:
        loops = [
            asyncio.create_task(turn_loop(client, server.url, api_key, c, stop, outcomes[c], **options))
            for c in conversations
        ]
        await asyncio.to_thread(during)
        stop.set()
        await asyncio.gather(*loops)
    return outcomes


async def test_sigkill_under_load_loses_no_acknowledged_turn(
    start_gateway: Callable[..., ServerProcess], database_url: str, api_key: str
) -> None:
    # a short lease, so that the killed process's leases (Postgres) expire quickly after the restart
    server = start_gateway(database_url, process=True, lock_lease="1")
    conversations = [f"kill-{secrets.token_hex(4)}-{n}" for n in range(8)]
    outcomes: dict[str, list[Outcome]] = {c: [] for c in conversations}

    def kill_mid_load() -> None:
        # Mid-load: once as many turns as conversations were acknowledged (however busy the machine), and
        # a little more, so that turns are in flight at the kill.
        deadline = time.monotonic() + 60
        while sum(o.acknowledged for runs in list(outcomes.values()) for o in runs[:]) < len(conversations):
            assert time.monotonic() < deadline, "no turn was acknowledged in 60 s"
            time.sleep(0.05)
        time.sleep(0.3)
        server.stop(signal.SIGKILL)

    await run_load(server, api_key, conversations, kill_mid_load, outcomes)
    assert sum(o.acknowledged for runs in outcomes.values() for o in runs) >= len(conversations)
    await asyncio.to_thread(server.start)
    async with httpx.AsyncClient(timeout=30) as client:
        for conversation_id, runs in outcomes.items():
            messages = await asyncio.to_thread(stored, server, api_key, conversation_id)
            check_conversation(messages, runs)
            # at most the one turn in flight at the kill may be stored without having been acknowledged
            assert len(messages) // 2 - sum(o.acknowledged for o in runs) <= 1
            if messages:  # (a conversation whose first turn was in flight at the kill does not exist)
                count = await asyncio.to_thread(message_count, server, api_key, conversation_id)
                assert count == len(messages) and count % 2 == 0
            after = await send_turn(
                client, server.url, api_key, conversation_id, "after the crash", stream=False
            )
            assert after.acknowledged, after


def test_sigterm_lets_in_flight_requests_and_streams_finish(
    start_gateway: Callable[..., ServerProcess],
    upstream: ServerProcess,
    database_url: str,
    api_key: str,
    conversation_id: str,
) -> None:
    server = start_gateway(database_url, process=True, shutdown_grace="20")
    assert server.process is not None
    url = f"{server.url}/v1/chat/completions"
    streamed, plain = f"{conversation_id}-stream", f"{conversation_id}-plain"

    def send(conversation: str, stream: bool) -> httpx.Response:
        body = turn_body("FAULT:slow:2000 finish me", stream=stream)
        return httpx.post(url, json=body, headers=turn_headers(api_key, conversation), timeout=30)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        in_flight = [pool.submit(send, streamed, True), pool.submit(send, plain, False)]
        deadline = time.monotonic() + 20
        while len(upstream_requests(upstream, api_key)) < 2:  # both are now inside the gateway
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        refused = False
        while not refused and time.monotonic() < deadline:
            try:
                httpx.get(server.url + "/healthz", timeout=1)
            except httpx.ConnectError:
                refused = True  # new connections are refused while the two requests still run
            except (httpx.RemoteProtocolError, httpx.ReadError):
                pass  # a connection accepted just before the listener closed is closed (or reset) unanswered
            time.sleep(0.02)
        stream_response, plain_response = (f.result() for f in in_flight)
    assert refused, server.log()[-3000:]
    assert stream_response.status_code == 200, stream_response.text
    assert stream_response.text.endswith("data: [DONE]\n\n"), (stream_response.text, server.log()[-3000:])
    assert plain_response.status_code == 200, (plain_response.text, server.log()[-3000:])
    assert (
        plain_response.json()["choices"][0]["message"]["content"] == "[1 messages] FAULT:slow:2000 finish me"
    )
    # uvicorn exits by re-raising the signal it handled once shutdown is complete
    assert server.process.wait(30) in (0, -signal.SIGTERM), server.log()[-3000:]
    for conversation in (streamed, plain):
        assert [m["role"] for m in stored_in_database(database_url, api_key, conversation)] == [
            "user",
            "assistant",
        ]


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    """A throwaway Postgres server this test may stop and start (never the shared one)."""
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"set {POSTGRES_ENV} to run the Postgres tests")
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("needs the PostgreSQL server binaries (initdb, pg_ctl) to run a private server")
    cluster = PrivateCluster.create(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.postgres
async def test_postgres_restart_under_load_is_503_then_fine(
    private_postgres: PrivateCluster, start_gateway: Callable[..., ServerProcess], api_key: str
) -> None:
    server = start_gateway(private_postgres.url, lock_lease="1")
    conversations = [f"pg-{secrets.token_hex(4)}-{n}" for n in range(6)]
    probes: list[httpx.Response] = []
    passed: list[httpx.Response] = []

    def outage() -> None:
        time.sleep(0.8)
        private_postgres.stop()
        with httpx.Client(timeout=30) as client:  # what a client sees while the database is down
            for stream in (False, True):
                probes.append(
                    client.post(
                        f"{server.url}/v1/chat/completions",
                        json=turn_body("anyone?", stream=stream),
                        headers=turn_headers(api_key, conversations[0]),
                    )
                )
            probes.append(
                client.get(
                    f"{server.url}/v1/conversations/{conversations[0]}",
                    headers={"Authorization": f"Bearer {api_key}"},
                )
            )
            probes.append(client.get(f"{server.url}/healthz"))
            # what needs no stored state is still forwarded, only not logged
            passed.extend(
                [
                    client.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {api_key}"}),
                    client.post(
                        f"{server.url}/v1/chat/completions",
                        json=turn_body("stateless"),
                        headers={"Authorization": f"Bearer {api_key}"},
                    ),
                ]
            )
            time.sleep(0.8)
        private_postgres.start()
        time.sleep(0.8)

    outcomes = await run_load(server, api_key, conversations, outage)
    for probe in probes:
        assert probe.status_code == 503, probe.text
        assert probe.json()["error"]["code"] == "database_unavailable"
    assert [r.status_code for r in passed] == [200, 200]
    every = [o for runs in outcomes.values() for o in runs]
    assert all(o.transport_error is None for o in every), [o for o in every if o.transport_error]
    assert {o.status for o in every} <= {200, 503}
    assert all(o.acknowledged or o.error_code == "database_unavailable" for o in every)
    assert any(o.status == 503 for o in every) and any(o.acknowledged for o in every)
    async with httpx.AsyncClient(timeout=30) as client:
        for conversation_id, runs in outcomes.items():
            messages = await asyncio.to_thread(stored, server, api_key, conversation_id)
            check_conversation(messages, runs)
            after = await send_turn(client, server.url, api_key, conversation_id, "back again", stream=True)
            assert after.acknowledged, after


def test_sigterm_past_the_grace_cancels_and_stores_no_half_turn(
    start_gateway: Any, upstream: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    server = start_gateway(database_url, process=True, shutdown_grace="1")
    assert server.process is not None
    url = f"{server.url}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "FAULT:slow:15000 too slow"}]}
    headers = {**auth(api_key), "X-Conversation-Id": conversation_id}
    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(httpx.post(url, json={**body, "stream": True}, headers=headers, timeout=30))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 20
    while not upstream_requests(upstream, api_key):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    server.process.send_signal(15)
    code = server.process.wait(12)  # the grace (1 s) ends long before the upstream would answer (15 s)
    thread.join(20)
    assert code in (0, -15), server.log()[-2000:]
    if outcome and isinstance(outcome[0], httpx.Response):
        assert not outcome[0].text.endswith("data: [DONE]\n\n")  # never acknowledged
    server.stop()
    restarted = start_gateway(database_url)
    stored = httpx.get(f"{restarted.url}/v1/conversations/{conversation_id}/messages", headers=auth(api_key))
    assert stored.status_code == 404 or stored.json()["data"] == [], stored.text

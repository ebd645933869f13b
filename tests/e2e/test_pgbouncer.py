"""The replica and serialization tests again, through PgBouncer in transaction pooling mode.

PgBouncer hands each transaction to whichever server connection is free, so nothing may outlive a
transaction on a server connection: no prepared statements, no session settings. The gateways here run
with GATEWAY_DB_TRANSACTION_POOLING=1 and their database URL pointing at a private PgBouncer (started on a
free port with a temporary config, in front of the Postgres test server).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_ENV, create_postgres_database, drop_postgres_database
from tests.e2e.test_replicas import (  # collected here again, with this module's fixtures
    test_a_small_pool_serves_more_conversations_than_connections,
    test_a_turn_longer_than_the_lease_keeps_the_conversation,
    test_fifty_conversations_run_in_parallel,
    test_turns_of_one_conversation_are_serialized_across_processes,
    test_workers_share_the_database,
)
from tests.helpers import assert_whole_turns, stored
from tests.pgbouncer import PgBouncer, pgbouncer_binary
from tests.servers import ServerProcess, gateway_server

__all__ = [
    "test_a_small_pool_serves_more_conversations_than_connections",
    "test_a_turn_longer_than_the_lease_keeps_the_conversation",
    "test_fifty_conversations_run_in_parallel",
    "test_turns_of_one_conversation_are_serialized_across_processes",
    "test_workers_share_the_database",
]

POOLING = {"db_transaction_pooling": "1"}


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    """A private PgBouncer (transaction mode) in front of the Postgres test server."""
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"set {POSTGRES_ENV} to run the Postgres tests")
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install -y pgbouncer)")
    started = PgBouncer.start(binary, os.environ[POSTGRES_ENV], pool_size=5)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def postgres_url(bouncer: PgBouncer) -> Iterator[str]:
    """A fresh database on the Postgres test server, reached through PgBouncer."""
    direct = create_postgres_database()
    try:
        yield bouncer.url(direct.rsplit("/", 1)[1])
    finally:
        drop_postgres_database(direct)


@pytest.fixture(scope="module")
def replicas(
    upstream: ServerProcess, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two gateways through PgBouncer; the second with a pool of 2 (+2); both with a 1 s lease."""
    tmp = tmp_path_factory.mktemp("bounced")
    first = gateway_server(tmp, upstream.url, postgres_url, lock_lease="1", **POOLING).start()
    try:
        second = gateway_server(
            tmp, upstream.url, postgres_url, lock_lease="1", db_pool_size="2", **POOLING
        ).start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


@pytest.fixture
def start_gateway(upstream: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Extra gateways with GATEWAY_DB_TRANSACTION_POOLING=1, always real processes."""
    started: list[ServerProcess] = []

    def start(database_url: str, *, process: bool = True, **env: str) -> ServerProcess:
        server = gateway_server(tmp_path, upstream.url, database_url, **POOLING, **env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_streamed_and_plain_turns_through_pgbouncer(
    replicas: tuple[ServerProcess, ServerProcess], api_key: str, conversation_id: str
) -> None:
    first, second = replicas
    with httpx.Client(timeout=30) as client:
        for n, (server, stream) in enumerate(
            [(first, False), (second, True), (first, True), (second, False)]
        ):
            response = client.post(
                f"{server.url}/v1/chat/completions",
                json={
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"n{n}"}],
                    "stream": stream,
                },
                headers={"Authorization": f"Bearer {api_key}", "X-Conversation-Id": conversation_id},
            )
            assert response.status_code == 200, response.text
    messages = stored(first, api_key, conversation_id)
    assert_whole_turns(messages)
    assert [m["content"] for m in messages[::2]] == ["n0", "n1", "n2", "n3"]

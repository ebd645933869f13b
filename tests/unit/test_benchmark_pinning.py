"""The benchmark keeps the local Postgres backends of its database on the load side's CPU (processes.py)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy import make_url

from tests.conftest import POSTGRES_ENV
from tests.helpers import benchmark_module

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"set {POSTGRES_ENV} to run"),
]


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_the_backends_of_the_benchmarks_database_are_found_and_pinned(postgres_url: str) -> None:
    url = make_url(postgres_url)
    if url.host not in ("127.0.0.1", "localhost") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs the Postgres server on this machine and two CPUs")
    processes = benchmark_module("processes")
    target = max(os.sched_getaffinity(0))

    async def check() -> None:
        connection = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            pid = await connection.fetchval("SELECT pg_backend_pid()")
            assert pid in processes.database_backends(url.database)
            assert pid not in processes.database_backends("postgres")
            with processes.backends_pinned(url.database, str(target), every=0.05) as pinned:
                await asyncio.to_thread(_wait_for, lambda: pid in pinned)
            assert pid in pinned
            assert os.sched_getaffinity(pid) == {target}
        finally:
            await connection.close()

    asyncio.run(check())

"""Shared fixtures: databases (SQLite always, Postgres when configured), the mock upstream, the gateway."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.helpers import close_sdk_clients
from tests.servers import AppServer, ServerProcess, gateway_app, gateway_server, mock_upstream

POSTGRES_ENV = "GATEWAY_TEST_POSTGRES_URL"
TEMPLATE_ENV = "GATEWAY_TEST_POSTGRES_TEMPLATE"
TEST_CA_ENV = "GATEWAY_TEST_CA_FILE"
ORIGINAL_CA_ENV = "GATEWAY_TEST_ORIGINAL_SSL_CERT_FILE"
CA_FILE_KEY = pytest.StashKey[str]()
TEMPLATE_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Test clients trust one CA instead of a whole bundle; name the run's migrated Postgres template;
    byte-compile the gateway package.

    Every httpx client, and every SDK client, loads its CA file when it is made (25-90 ms for a bundle);
    the suite makes thousands and only ever speaks plain HTTP to 127.0.0.1. `SSL_CERT_FILE` is the
    variable httpx and the SDK read for that file; the gateway's own upstream client ignores it
    (trust_env=False) and child processes get the original value back (tests.servers.base_env).
    The workers inherit both variables.
    """
    if os.environ.get(TEST_CA_ENV):  # an xdist worker: its controller made the file
        return
    import certifi

    bundle = Path(certifi.where()).read_text()
    end = "-----END CERTIFICATE-----"
    handle, name = tempfile.mkstemp(prefix="gateway-test-ca-", suffix=".pem")
    with os.fdopen(handle, "w") as file:
        file.write(bundle[: bundle.index(end) + len(end)] + "\n")
    if _admin_url():  # the migrated template's name, shared by the workers (ensure_postgres_template)
        os.environ[TEMPLATE_ENV] = config.stash[TEMPLATE_KEY] = f"gw_template_{secrets.token_hex(6)}"
    os.environ[ORIGINAL_CA_ENV] = os.environ.get("SSL_CERT_FILE", "")
    os.environ["SSL_CERT_FILE"] = os.environ[TEST_CA_ENV] = name
    config.stash[CA_FILE_KEY] = name
    _compile_gateway()


def _compile_gateway() -> None:
    """Byte-compile the gateway package once, as `pip install .` does, for the gateway processes tests start.

    From a checkout (an editable install) every process compiles the package's modules anew wherever
    bytecode is not written back (PYTHONDONTWRITEBYTECODE, as on the CI machine): ~0.2 s of each start.
    """
    import compileall

    import gateway

    compileall.compile_dir(Path(gateway.__file__).parent, quiet=1)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the one-CA file pytest_configure wrote and restore SSL_CERT_FILE; drop the run's template."""
    template = config.stash.get(TEMPLATE_KEY, None)
    if template is not None:
        os.environ.pop(TEMPLATE_ENV, None)
        _admin_sql(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    name = config.stash.get(CA_FILE_KEY, None)
    if name is None:
        return
    os.environ.pop(TEST_CA_ENV, None)
    original = os.environ.pop(ORIGINAL_CA_ENV, "")
    if original:
        os.environ["SSL_CERT_FILE"] = original
    else:
        os.environ.pop("SSL_CERT_FILE", None)
    Path(name).unlink(missing_ok=True)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core plus one. A good share of the suite waits (on gateway processes starting
    and stopping, sockets, Postgres), and a third worker fills that time: 181 s instead of 231 s on 2 cores,
    where a fourth gains nothing more (185 s)."""
    return len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) + 1


# The modules that take longest (from `pytest --durations`), most expensive first: they are handed to the
# xdist workers first (`--dist loadfile --no-loadscope-reorder` in pyproject.toml), and the many small modules
# after them fill the gaps, so that the workers finish together. Every other module keeps its place.
SLOW_MODULES = (
    "tests/e2e/test_durability.py",
    "tests/api/test_hostile.py",
    "tests/e2e/test_wire.py",
    "tests/e2e/test_history_strategies.py",
    "tests/e2e/test_conversations_api.py",
    "tests/e2e/test_keys.py",
    "tests/e2e/test_pgbouncer.py",
    "tests/e2e/test_replicas.py",
    "tests/e2e/test_openapi.py",
    "tests/e2e/test_responses_clients.py",
    "tests/e2e/test_chat.py",
    "tests/e2e/test_cli.py",
    "tests/e2e/test_concurrency.py",
    "tests/e2e/test_retries.py",
    "tests/e2e/test_dashboard_browser.py",
    "tests/e2e/test_faults.py",
    "tests/e2e/test_history_budget.py",
    "tests/e2e/test_operations.py",
    "tests/e2e/test_hostile.py",
    "tests/e2e/test_node_sdk.py",
    "tests/e2e/test_full_history.py",
    "tests/e2e/test_streaming.py",
    "tests/e2e/test_packaging.py",
    "tests/e2e/test_secrets.py",
    "tests/e2e/test_usage.py",
    "tests/e2e/test_slow_clients.py",
    "tests/unit/test_trimming.py",
    "tests/api/test_request_bodies.py",
    "tests/unit/test_tokens.py",
    "tests/unit/test_stable_window.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the slow modules first (SLOW_MODULES), each module's tests still together and in order."""
    rank = {path: index for index, path in enumerate(SLOW_MODULES)}
    root = config.rootpath
    items.sort(key=lambda item: rank.get(item.path.relative_to(root).as_posix(), len(rank)))


def _admin_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


async def _admin_connection() -> Any:
    """An asyncpg connection to the test server's maintenance database."""
    import asyncpg

    base = make_url(_admin_url() or "")
    return await asyncpg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        password=base.password,
        database=base.database or "postgres",
    )


def _admin_sql(statement: str) -> None:
    """Run one statement on the test server's maintenance database (CREATE/DROP DATABASE)."""
    import asyncio

    async def run() -> None:
        connection = await _admin_connection()
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def _postgres_url(name: str) -> str:
    return make_url(_admin_url() or "").set(database=name).render_as_string(hide_password=False)


def create_postgres_database(*, migrated: bool = False) -> str:
    """Create a fresh database on the test server; returns its asyncpg URL.

    `migrated`: a copy of the run's migrated template (tests.conftest.ensure_postgres_template), so a
    module's database costs a file copy instead of running every migration again.
    """
    name = f"gw_test_{secrets.token_hex(6)}"
    template = f' TEMPLATE "{ensure_postgres_template()}"' if migrated else ""
    _admin_sql(f'CREATE DATABASE "{name}"{template}')
    return _postgres_url(name)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by create_postgres_database."""
    _admin_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(
                not os.environ.get(POSTGRES_ENV),
                reason=f"set {POSTGRES_ENV}=postgresql+asyncpg://user@127.0.0.1:5432/postgres to run",
            ),
        ],
    ),
]


def ensure_postgres_template() -> str:
    """The run's migrated template database on the test server, made by the first worker that needs it.

    Its name comes from the controller (pytest_configure), which drops it at the end; an advisory lock
    makes the xdist workers wait for the one that migrates it.
    """
    import asyncio

    from gateway import migrate
    from gateway.store.database import open_database

    name = os.environ.setdefault(TEMPLATE_ENV, f"gw_template_{secrets.token_hex(6)}")
    if name in _READY_TEMPLATES:
        return name

    async def run() -> None:
        connection = await _admin_connection()
        try:
            await connection.execute("SELECT pg_advisory_lock(hashtext($1))", name)
            if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await connection.execute(f'CREATE DATABASE "{name}"')
                database = open_database(_postgres_url(name), lease_seconds=60, pool_size=1)
                try:
                    await migrate.upgrade(database)
                finally:
                    await database.close()
            await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", name)
        finally:
            await connection.close()

    asyncio.run(run())
    _READY_TEMPLATES.add(name)
    return name


_READY_TEMPLATES: set[str] = set()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, made once per test process; the `database_url` fixture copies it."""
    import asyncio

    from gateway import migrate
    from gateway.store.database import open_database

    path = tmp_path_factory.mktemp("template") / "migrated.db"

    async def run() -> None:
        database = open_database(f"sqlite+aiosqlite:///{path}", lease_seconds=60, pool_size=1)
        try:
            await migrate.upgrade(database)
        finally:
            await database.close()  # the last connection checkpoints the WAL into the file

    asyncio.run(run())
    return path


@pytest.fixture(params=BACKENDS, scope="module")
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database of each backend, already migrated to the head (a copy of a migrated template)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "gateway.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = create_postgres_database(migrated=True)
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(params=BACKENDS, scope="module")
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, empty database of each backend (for the tests of the migrations themselves)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'gateway.db'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
def empty_database_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two fresh, empty databases of each backend (to compare two ways of building the schema)."""
    if request.param == "sqlite":
        yield (f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
        return
    first = create_postgres_database()
    try:
        second = create_postgres_database()
        try:
            yield first, second
        finally:
            drop_postgres_database(second)
    finally:
        drop_postgres_database(first)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the Postgres test server for the module (for modules marked postgres)."""
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The mock upstream, one process for the whole session."""
    server = mock_upstream(tmp_path_factory.mktemp("mock")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(upstream: ServerProcess, database_url: str) -> Iterator[AppServer]:
    """The gateway in front of the mock upstream, served in this process, shared by a module (per backend)."""
    server = gateway_app(upstream.url, database_url).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_gateway(upstream: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start extra gateways with their own settings (database, timeouts, keys); all stopped at the end.

    They are served in this process unless `process=True` (tests of signals, restarts, logs, workers).
    """
    started: list[ServerProcess | AppServer] = []

    def start(
        database_url: str, upstream_url: str | None = None, *, process: bool = False, **env: str
    ) -> ServerProcess | AppServer:
        target = upstream_url or upstream.url
        server: ServerProcess | AppServer
        if process:
            server = gateway_server(tmp_path, target, database_url, **env).start()
        else:
            server = gateway_app(target, database_url, **env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    """Close the SDK clients a test opened with tests.helpers.sdk()."""
    yield
    close_sdk_clients()


@pytest.fixture
def conversation_id() -> str:
    """A conversation id no other test uses."""
    return f"conv-{secrets.token_hex(6)}"


@pytest.fixture
def api_key() -> str:
    """A bearer token of a fresh caller."""
    return f"sk-test-{secrets.token_hex(8)}"

"""`gateway serve`, `gateway migrate` and `gateway mock-upstream`: the commands that run servers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import click
import uvicorn

from gateway import heap
from gateway.cli.settings import DATABASE_OPTION, check_prices_file, check_summary_prompt, load_settings
from gateway.config import Settings
from gateway.errors import DatabaseUnavailable
from gateway.redaction import protect_logs

SETTINGS_ENV = "GATEWAY_SETTINGS_JSON"


def app_factory() -> Any:
    """Build the app in a uvicorn worker process from the settings the parent serialized."""
    import json

    from gateway.app import create_app
    from gateway.logs import configure_logging
    from gateway.server import set_deadlines

    keep_process_small()
    values = json.loads(os.environ[SETTINGS_ENV])
    values["proxy_allow"] = tuple(values.get("proxy_allow", ()))  # JSON made the tuple a list
    settings = Settings(**values)
    set_deadlines(settings.header_timeout, settings.body_timeout)
    configure_logging(settings.log_level, settings.log_format)  # a spawned worker starts unconfigured
    protect_logs(settings)
    return create_app(settings)


@click.command()
@click.option("--host", default=None, help="Interface to bind (GATEWAY_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (GATEWAY_PORT, default 8000).")
@click.option("--upstream", "upstream_url", default=None, help="Upstream base URL (GATEWAY_UPSTREAM_URL).")
@click.option("--database-url", default=None, help="SQLAlchemy URL (GATEWAY_DATABASE_URL).")
@click.option("--workers", type=int, default=None, help="Worker processes (Postgres only; GATEWAY_WORKERS).")
def serve(**flags: Any) -> None:
    """Run the gateway (applies migrations on start)."""
    import json

    keep_process_small()
    from uvicorn.supervisors import Multiprocess

    from gateway.logs import configure_logging
    from gateway.metrics import prepare_multiprocess_dir
    from gateway.server import PROTOCOL, set_deadlines

    settings = load_settings(**flags)
    if settings.workers > 1 and settings.is_sqlite:
        raise click.UsageError(
            "--workers above 1 needs Postgres: SQLite is the single-process default. "
            "Set GATEWAY_DATABASE_URL=postgresql+asyncpg://... or run one worker."
        )
    check_prices_file(settings.prices_file)
    check_summary_prompt(settings.summary_prompt_file)
    configure_logging(settings.log_level, settings.log_format)
    protect_logs(settings)
    if settings.metrics_dir is not None:
        try:
            prepare_multiprocess_dir(settings.metrics_dir)
        except OSError as exc:
            raise click.UsageError(f"PROMETHEUS_MULTIPROC_DIR is not a usable directory: {exc}") from exc
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # uvicorn's records go to the handler configure_logging installed
        "log_level": "warning",
        "access_log": False,  # the gateway writes its own access log
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "lifespan": "on",
        "http": PROTOCOL,  # uvicorn's httptools protocol with header and body read deadlines
        "ws": "none",  # no WebSocket endpoint: an upgrade request is a plain HTTP request (and ~3 MB less)
        "timeout_keep_alive": settings.keep_alive_timeout,
        "limit_concurrency": settings.max_connections,
    }
    set_deadlines(settings.header_timeout, settings.body_timeout)
    migrate_or_exit(settings)  # fail fast, in one line, when the database is unreachable
    parts = urlsplit(settings.upstream_url)
    upstream = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no credentials in logs
    listening = f"listening on http://{settings.host}:{settings.port}, upstream {upstream}"
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
        config = uvicorn.Config(
            "gateway.cli.serve:app_factory", factory=True, workers=settings.workers, **options
        )
        sock = config.bind_socket()  # the workers share the parent's socket: it accepts from now on
        logging.getLogger("gateway").info(listening)
        Multiprocess(config, sockets=[sock]).run()  # what uvicorn.run does for workers > 1
        return
    from gateway.app import create_app

    _Server(uvicorn.Config(create_app(settings), **options), listening).run()


MALLOC_ARENAS = 2
"""glibc's malloc arenas in a serving process (its default: 8 per core, one per thread that allocates)."""


def keep_process_small() -> None:
    """What keeps a serving process's memory down; call before anything starts threads.

    - gateway/heap.py's policy: freed memory given back after start-up, start-up's objects frozen.
    - glibc gives every thread that allocates (the SQLite lane, worker threads, the tokenizer build) its own
      arena, each keeping freed memory for itself: two arenas hold ~6 MB less under load, at no measured cost
      (the threads seldom allocate at the same time: they share the GIL).
    - httpx imports its command-line client (rich and pygments, ~4 MB) whenever those are installed, as in the
      test environment; a server never runs it.
    """
    import ctypes
    import sys

    heap.serving()  # the memory policy of gateway/heap.py applies in this process
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc and musl have it; macOS does not
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    if "httpx._main" not in sys.modules:  # None: `from ._main import main` fails, which httpx allows
        sys.modules["httpx._main"] = None  # type: ignore[assignment]


_M_ARENA_MAX = -8  # glibc's malloc.h


class _Server(uvicorn.Server):
    """uvicorn's server, logging "listening" only once its socket is bound and accepting."""

    def __init__(self, config: uvicorn.Config, listening: str) -> None:
        super().__init__(config)
        self.listening = listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            logging.getLogger("gateway").info(self.listening)


class DatabaseUnreachable(click.ClickException):
    """The database could not be reached or migrated: a one-line error, exit status 2."""

    exit_code = 2


def migrate_or_exit(settings: Settings) -> str | None:
    """Apply the migrations; on a database that cannot be reached, fail with one clear line.

    A database already at the newest revision costs one query. Otherwise it is brought there in a child
    process forked for that (an empty one created from the table definitions, others migrated by Alembic;
    gateway/migrate.py): what that loads (the DDL compiler, the inspector, Alembic: ~4-9 MB) never stays
    in the server.
    """
    from gateway import migrate as migrations

    outcome = _migrated(settings, apply=False)
    if isinstance(outcome, _Revision) and outcome.revision != migrations.head_revision():
        outcome = _in_child(_migrated, settings, apply=True)
    if isinstance(outcome, _Unreachable):
        where = _safe_url(settings.database_url)
        raise DatabaseUnreachable(f"cannot use the database {where}: {outcome.reason}")
    return outcome.revision


@dataclasses.dataclass(frozen=True)
class _Revision:
    revision: str | None


@dataclasses.dataclass(frozen=True)
class _Unreachable:
    reason: str


def _migrated(settings: Settings, *, apply: bool) -> _Revision | _Unreachable:
    """The database's revision after applying the migrations (or only reading it, when `apply` is false)."""
    from gateway import migrate as migrations
    from gateway.store.database import db_errors, open_database

    async def run() -> str | None:
        db = open_database(
            settings.database_url,
            lease_seconds=settings.lock_lease,
            pool_size=1,
            transaction_pooling=settings.db_transaction_pooling,
        )
        try:
            if apply:
                await migrations.upgrade(db)
            return await migrations.current_revision(db)
        finally:
            await db.close()

    unreachable: tuple[type[BaseException], ...] = (DatabaseUnavailable, *db_errors(settings.database_url))
    try:
        return _Revision(asyncio.run(run()))
    except unreachable as exc:
        cause = exc.__cause__ or exc  # a unit of work wraps the driver's error: report the driver's
        return _Unreachable(str(cause).splitlines()[0] if str(cause) else type(cause).__name__)


def _in_child(
    function: Callable[..., _Revision | _Unreachable], *args: Any, **kwargs: Any
) -> _Revision | _Unreachable:
    """Run `function` in a forked child process and return its result (in this process without fork)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():
        return function(*args, **kwargs)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as child:
        return child.submit(function, *args, **kwargs).result()


def _safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


@click.command()
@DATABASE_OPTION
def migrate(database_url: str | None) -> None:
    """Apply the database migrations and exit."""
    settings = load_settings(database_url=database_url)
    revision = migrate_or_exit(settings)
    click.echo(f"database at revision {revision}")


@click.command("mock-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9000, show_default=True)
@click.option(
    "--prompt-cache",
    is_flag=True,
    help="Report cached_tokens for the longest prompt prefix seen before (per API key; 1,024+ tokens, "
    "128-token steps, forgotten after 5 minutes idle), like OpenAI's prompt caching.",
)
def mock_upstream(host: str, port: int, prompt_cache: bool) -> None:
    """Run the built-in fake OpenAI upstream (a testing aid, not a model)."""
    from gateway.mock_upstream import run_mock

    click.echo(f"mock upstream (testing aid) on http://{host}:{port}/v1", err=True)
    run_mock(host, port, prompt_cache=prompt_cache)

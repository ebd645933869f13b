"""What the tests share: SDK clients, raw turns, what the gateway stored, the request log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import httpx
from click.testing import CliRunner
from openai import OpenAI
from sqlalchemy import Connection, Engine, create_engine, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from gateway import migrate
from gateway.attempts import AttemptRecord, attempt_record
from gateway.cli import main as gateway_command
from gateway.history import BudgetRule
from gateway.pricing import CallCost
from gateway.store.conversations import LoadedTurn, conversation_budget, load_turn_state
from gateway.store.database import Database, open_database
from gateway.store.tables import ATTEMPTS, CONVERSATIONS, MESSAGES
from tests.servers import upstream_requests

MODEL = "gpt-4o-mini"
ERROR_KEYS = {"message", "type", "param", "code"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
        },
    }
]

_OPEN_CLIENTS: list[OpenAI] = []


class Server(Protocol):
    """What the helpers need of a gateway: its base URL (tests.servers.ServerProcess or AppServer)."""

    @property
    def url(self) -> str:
        """The base URL."""


# ---------------------------------------------------------------- requests


def sdk(server: Server, key: str, conversation: str | None = None, **kwargs: Any) -> OpenAI:
    """A sync SDK client pointed at `server`, with `X-Conversation-Id` when given; closed after the test."""
    headers = {"X-Conversation-Id": conversation} if conversation is not None else {}
    client = OpenAI(base_url=server.url + "/v1", api_key=key, default_headers=headers, **kwargs)
    _OPEN_CLIENTS.append(client)
    return client


def close_sdk_clients() -> None:
    """Close every client sdk() opened (tests/conftest.py does it after each test)."""
    while _OPEN_CLIENTS:
        _OPEN_CLIENTS.pop().close()


def auth(key: str, conversation: str | None = None) -> dict[str, str]:
    """Headers of a raw request: bearer token, and the conversation id when given."""
    headers = {"Authorization": f"Bearer {key}"}
    if conversation is not None:
        headers["X-Conversation-Id"] = conversation
    return headers


def turn_headers(api_key: str, conversation_id: str, **extra: str) -> dict[str, str]:
    """Authorization and X-Conversation-Id, plus any extra headers."""
    return {**auth(api_key, conversation_id), **extra}


def roles(messages: list[dict[str, Any]]) -> list[str]:
    """The role of each message."""
    return [m["role"] for m in messages]


def user(text: str) -> dict[str, Any]:
    """A user message."""
    return {"role": "user", "content": text}


def turn_body(text: str, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A chat-completions body with one user message."""
    return {"model": MODEL, "messages": [user(text)], "stream": stream, **extra}


def chat(
    server: Server,
    key: str,
    conversation_id: str | None,
    body: dict[str, Any] | bytes,
    **kwargs: Any,
) -> httpx.Response:
    """A raw POST /v1/chat/completions (read completely)."""
    headers = auth(key, conversation_id) | {"Content-Type": "application/json"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        content=content,
        headers=headers | kwargs.pop("headers", {}),
        timeout=kwargs.pop("timeout", 30),
        **kwargs,
    )


def turn(
    server: Server, api_key: str, conversation_id: str, text: str, **headers: str
) -> tuple[dict[str, Any], httpx.Headers]:
    """One stateful turn over raw HTTP (it must succeed); returns the body and the headers."""
    response = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [user(text)]},
        headers=auth(api_key, conversation_id) | headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json(), response.headers


def history(headers: httpx.Headers) -> tuple[int, int]:
    """(X-History-Messages, X-History-Dropped) of a turn's answer."""
    return int(headers["x-history-messages"]), int(headers["x-history-dropped"])


def sent_messages(upstream: Server, key: str) -> list[dict[str, Any]]:
    """The messages of the last chat request the mock upstream received from `key`."""
    messages: list[dict[str, Any]] = upstream_requests(upstream, key)[-1]["body"]["messages"]
    return messages


def data_events(text: str) -> list[str]:
    """The payloads of the `data:` lines of an SSE body, in order."""
    return [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]


def stream_text(text: str) -> str:
    """The assistant content carried by an SSE body's chunks."""
    out = []
    for payload in data_events(text):
        if payload == "[DONE]":
            continue
        for choice in json.loads(payload).get("choices") or ():
            out.append(choice.get("delta", {}).get("content") or "")
    return "".join(out)


# ---------------------------------------------------------------- the operator commands, in this process


@dataclass
class CommandResult:
    """What `gateway ARGS` ended with: its exit status and what it printed (as subprocess.run reports)."""

    returncode: int
    stdout: str
    stderr: str


def fresh_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `script` (with `args`) in a new interpreter of this venv: what a module loads shows only there."""
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=False)


def run_command(*args: str, **env: str) -> CommandResult:
    """Run `gateway ARGS` in this process with click's CliRunner: for the operator commands (keys, usage,
    conversations), whose process is not the point. GATEWAY_* variables come from `env` only,
    as tests.servers.base_env gives a child; an uncaught exception is exit 1 with its traceback on stderr,
    as in a process. `serve`, `migrate` (it forks a child to migrate) and the console script itself are run
    as processes (tests/e2e/test_cli.py).
    """
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("GATEWAY_")}
    result = CliRunner().invoke(gateway_command, list(args), env=unset | dict(env))
    stderr = result.stderr
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return CommandResult(result.exit_code, result.stdout, stderr)


# ---------------------------------------------------------------- what the gateway stored (over HTTP)


def stored(server: Server, key: str, conversation: str) -> list[dict[str, Any]]:
    """The stored messages of a conversation ([] when it does not exist)."""
    response = httpx.get(
        f"{server.url}/v1/conversations/{conversation}/messages", headers=auth(key), timeout=30
    )
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    data: list[dict[str, Any]] = body["data"]
    return data


def without_created_at(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored messages minus their `created_at`, to compare with what was sent."""
    return [{k: v for k, v in m.items() if k != "created_at"} for m in messages]


def conversation(server: Server, key: str, conversation_id: str) -> httpx.Response:
    """GET /v1/conversations/{id}."""
    return httpx.get(f"{server.url}/v1/conversations/{conversation_id}", headers=auth(key), timeout=30)


def message_count(server: Server, api_key: str, conversation_id: str) -> int:
    """The conversation's message_count as GET /v1/conversations/{id} reports it."""
    response = conversation(server, api_key, conversation_id)
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


# ---------------------------------------------------------------- the database, read directly


def identity(key: str) -> str:
    """The caller identity: SHA-256 hex of the bearer token."""
    return hashlib.sha256(key.encode()).hexdigest()


@functools.cache
def _sqlite_reader(database_url: str) -> Engine:
    """A synchronous engine on an SQLite file, without a pool: kept for its compiled statements."""
    return create_engine(make_url(database_url).set(drivername="sqlite+pysqlite"), poolclass=NullPool)


def read_database(database_url: str, statement: Any) -> list[Any]:
    """Run one SELECT on the gateway's database from a synchronous test; the rows."""
    if make_url(database_url).get_backend_name() == "sqlite":
        with _sqlite_reader(database_url).connect() as connection:
            return list(connection.execute(statement).all())

    async def run() -> list[Any]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                return list((await connection.execute(statement)).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def request_log(
    database_url: str,
    *,
    key: str | None = None,
    conversation_id: str | None = None,
    request_id: str | None = None,
) -> list[dict[str, Any]]:
    """Request-log rows (every column), oldest first: of one caller, conversation or request id."""
    statement = select(ATTEMPTS).order_by(ATTEMPTS.c.created_at, ATTEMPTS.c.pk)
    if key is not None:
        statement = statement.where(ATTEMPTS.c.owner == identity(key))
    if conversation_id is not None:
        statement = statement.where(ATTEMPTS.c.conversation_id == conversation_id)
    if request_id is not None:
        statement = statement.where(ATTEMPTS.c.request_id == request_id)
    return [dict(row._mapping) for row in read_database(database_url, statement)]


def attempts(database_url: str, key: str) -> list[dict[str, Any]]:
    """The request-log rows of one caller, oldest first."""
    return request_log(database_url, key=key)


def attempt_count(database_url: str, api_key: str, conversation_id: str) -> int:
    """How many request-log rows the conversation has."""
    return len(request_log(database_url, key=api_key, conversation_id=conversation_id))


def stored_in_database(database_url: str, api_key: str, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's stored messages read straight from the database (no gateway needed)."""
    statement = (
        select(MESSAGES.c.body)
        .join(CONVERSATIONS, CONVERSATIONS.c.pk == MESSAGES.c.conversation_pk)
        .where(CONVERSATIONS.c.owner == identity(api_key), CONVERSATIONS.c.id == conversation_id)
        .order_by(MESSAGES.c.seq)
    )
    return [json.loads(row[0]) for row in read_database(database_url, statement)]


# ---------------------------------------------------------------- turns under load (durability, replicas)


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


@contextlib.asynccontextmanager
async def migrated_database(url: str, *, lease_seconds: float = 60) -> AsyncIterator[Database]:
    """A migrated database on a small pool, closed afterwards (its SQLite lane thread and its engine)."""
    database = open_database(url, lease_seconds=lease_seconds, pool_size=2)
    try:
        await migrate.upgrade(database)
        yield database
    finally:
        await database.close()


def logged_call(owner: str, conversation_id: str | None = None, **changes: Any) -> AttemptRecord:
    """A request-log record of a successful call without usage, for tests that write rows themselves."""
    record = attempt_record(
        owner=owner,
        conversation_id=conversation_id,
        request_id=secrets.token_hex(8),
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        response_model=None,
        status=200,
        error=None,
        latency_ms=1.0,
        created_at=1.0,
        usage=None,
        cost=CallCost(None, None),
    )
    return dataclasses.replace(record, **changes)


def insert_log_rows(connection: Connection, *rows: dict[str, Any]) -> None:
    """Write request-log rows column by column (report fixtures: any column, a deleted conversation's too)."""
    for row in rows:
        connection.execute(insert(ATTEMPTS), row)


async def load_state(db: Database, owner: str, conversation_id: str, rule: BudgetRule) -> LoadedTurn:
    """What a turn of `conversation_id` under `rule` reads through the store's unit of work (no anchor)."""
    return await db.run(
        functools.partial(
            load_turn_state,
            owner=owner,
            conversation_id=conversation_id,
            budget_for=functools.partial(conversation_budget, rule),
            anchored=lambda c: False,
        )
    )


def benchmark_module(name: str) -> ModuleType:
    """A module of benchmarks/ (a folder of scripts, not a package), loaded under a name of its own."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module

"""The command line: console script, serve flags over env vars, migrate, healthz, the usage and
conversations commands against the database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import create_postgres_database, drop_postgres_database
from tests.helpers import CommandResult, auth, run_command, turn
from tests.servers import ServerProcess, base_env, free_port, upstream_requests, wait_until_up

# Two entries where one is a prefix of the other: the longest prefix must win.


def run_cli(database_url: str, *args: str) -> CommandResult:
    return run_command(*args, GATEWAY_DATABASE_URL=database_url)


# ---------------------------------------------------------------- Usage and cost


def test_cli_conversations_with_the_database_from_the_environment(
    sliding: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    """'sliding conversations list|show ID|delete ID in the CLI, reading the same database.'"""
    turn(sliding, api_key, conversation_id, "cli")
    listed = run_cli(database_url, "conversations", "list")
    assert listed.returncode == 0 and conversation_id in listed.stdout, listed.stderr
    shown = run_cli(database_url, "conversations", "show", conversation_id)
    assert shown.returncode == 0 and conversation_id in shown.stdout, shown.stderr
    deleted = run_cli(database_url, "conversations", "delete", conversation_id, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert (
        httpx.get(f"{sliding.url}/v1/conversations/{conversation_id}", headers=auth(api_key)).status_code
        == 404
    )
    missing = run_cli(database_url, "conversations", "show", conversation_id)
    assert missing.returncode != 0


GATEWAY = str(Path(sys.executable).with_name("gateway"))
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts, stopped (by PID) at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def spawn(
    processes: list[subprocess.Popen[bytes]],
    args: list[str],
    env: dict[str, str],
    log: Path,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start the console script `gateway` with `args`."""
    with log.open("ab") as out:
        process = subprocess.Popen([GATEWAY, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    processes.append(process)
    return process


def _tables(database_url: str) -> set[str]:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database or "") as connection:
            return {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    import asyncio

    import asyncpg

    async def run() -> set[str]:
        connection = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
        )
        try:
            rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r[0] for r in rows}
        finally:
            await connection.close()

    return asyncio.run(run())


def test_console_script_and_commands() -> None:
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("gateway", "").startswith("gateway.")
    top = subprocess.run([GATEWAY, "--help"], capture_output=True, text=True, check=True).stdout
    assert {"serve", "migrate", "mock-upstream"} <= set(top.split())
    serve = subprocess.run([GATEWAY, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--host", "--port", "--upstream", "--database-url"):
        assert flag in serve
    mock = subprocess.run(
        [GATEWAY, "mock-upstream", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--port" in mock


def test_mock_upstream_command(processes: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    port = free_port()
    process = spawn(processes, ["mock-upstream", "--port", str(port)], base_env(), tmp_path / "mock.log")
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url + "/v1/models", process, tmp_path / "mock.log")
    headers = {"Authorization": "Bearer sk-test"}
    reply = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=headers).json()
    assert reply["choices"][0]["message"]["content"] == "[1 messages] hi"
    streamed = httpx.post(url + "/v1/chat/completions", json=CHAT | {"stream": True}, headers=headers)
    assert streamed.text.endswith("data: [DONE]\n\n")


def test_serve_flags_override_env_vars(
    processes: list[subprocess.Popen[bytes]], upstream: ServerProcess, tmp_path: Path
) -> None:
    env_port, flag_port = free_port(), free_port()
    env = base_env() | {
        "GATEWAY_HOST": "127.0.0.2",
        "GATEWAY_PORT": str(env_port),
        "GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}",
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'env.db'}",
    }
    args = ["serve", "--host", "127.0.0.1", "--port", str(flag_port), "--upstream", upstream.url]
    args += ["--database-url", f"sqlite+aiosqlite:///{tmp_path / 'flag.db'}"]
    process = spawn(processes, args, env, tmp_path / "serve.log")
    url = f"http://127.0.0.1:{flag_port}"
    wait_until_up(url + "/healthz", process, tmp_path / "serve.log")
    response = httpx.post(
        url + "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-flags"}
    )
    assert response.status_code == 200 and len(upstream_requests(upstream, "sk-flags")) == 1
    assert (tmp_path / "flag.db").exists() and not (tmp_path / "env.db").exists()


def test_serve_reads_env_vars_and_defaults_to_gateway_db_in_cwd(
    processes: list[subprocess.Popen[bytes]], upstream: ServerProcess, tmp_path: Path
) -> None:
    port = free_port()
    env = base_env() | {
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_UPSTREAM_URL": upstream.url,
    }
    process = spawn(processes, ["serve"], env, tmp_path / "serve.log", cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url + "/healthz", process, tmp_path / "serve.log")
    headers = {"Authorization": "Bearer sk-env", "X-Conversation-Id": "c"}
    assert httpx.post(url + "/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert (tmp_path / "gateway.db").exists()
    with sqlite3.connect(tmp_path / "gateway.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrate_creates_the_schema_and_is_repeatable(empty_database_url: str) -> None:
    for how in ("flag", "env", "flag"):
        args, env = [GATEWAY, "migrate"], base_env()
        if how == "flag":
            args += ["--database-url", empty_database_url]
        else:
            env["GATEWAY_DATABASE_URL"] = empty_database_url
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    assert {"alembic_version", "conversations", "messages"} <= _tables(empty_database_url)


def test_serve_with_an_unreachable_database_fails_clearly(
    processes: list[subprocess.Popen[bytes]], upstream: ServerProcess, tmp_path: Path
) -> None:
    """Nothing listens at the Postgres URL: serve must not look healthy (exit with a reason, or 503)."""
    port = free_port()
    database_url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    args = ["serve", "--port", str(port), "--upstream", upstream.url, "--database-url", database_url]
    log = tmp_path / "serve.log"
    process = spawn(processes, args, base_env(), log)
    try:
        code = process.wait(30)
    except subprocess.TimeoutExpired:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert response.status_code == 503
        return
    output = log.read_text()
    assert code != 0
    assert "refused" in output.lower() or "connect" in output.lower(), output[-3000:]


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("GATEWAY_TEST_POSTGRES_URL"), reason="needs GATEWAY_TEST_POSTGRES_URL")
def test_healthz_is_503_when_the_database_goes_away(
    processes: list[subprocess.Popen[bytes]], upstream: ServerProcess, tmp_path: Path
) -> None:
    database_url = create_postgres_database()
    port = free_port()
    args = ["serve", "--port", str(port), "--upstream", upstream.url, "--database-url", database_url]
    process = spawn(processes, args, base_env(), tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/healthz", process, tmp_path / "serve.log")
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    finally:
        drop_postgres_database(database_url)
    response = httpx.get(url + "/healthz", timeout=30)
    assert response.status_code == 503
    headers = {"Authorization": "Bearer sk-dbdown", "X-Conversation-Id": "c"}
    response = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=30)
    assert response.status_code >= 500 and set(response.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert "Traceback" not in response.text

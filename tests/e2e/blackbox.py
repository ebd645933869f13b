"""Helpers for the black-box tests: SDK clients, what the gateway stored, the request log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from typing import Any

import httpx
from openai import OpenAI
from sqlalchemy.engine import make_url

from tests.servers import ServerProcess


class Clients:
    """Opens SDK clients for a test and closes them all at the end."""

    def __init__(self) -> None:
        self._open: list[OpenAI] = []

    def sdk(self, server: ServerProcess, key: str, conversation: str | None = None, **kwargs: Any) -> OpenAI:
        """A sync SDK client pointed at `server`, with `X-Conversation-Id` when given."""
        headers = {"X-Conversation-Id": conversation} if conversation is not None else {}
        client = OpenAI(base_url=server.url + "/v1", api_key=key, default_headers=headers, **kwargs)
        self._open.append(client)
        return client

    def close(self) -> None:
        """Close every client opened so far."""
        while self._open:
            self._open.pop().close()


def auth(key: str, conversation: str | None = None) -> dict[str, str]:
    """Headers of a raw request: bearer token, and the conversation id when given."""
    headers = {"Authorization": f"Bearer {key}"}
    if conversation is not None:
        headers["X-Conversation-Id"] = conversation
    return headers


def stored(server: ServerProcess, key: str, conversation: str) -> list[dict[str, Any]]:
    """The stored messages of a conversation (empty when it does not exist)."""
    response = httpx.get(f"{server.url}/v1/conversations/{conversation}/messages", headers=auth(key))
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


def conversation(server: ServerProcess, key: str, conversation_id: str) -> httpx.Response:
    """GET /v1/conversations/{id}."""
    return httpx.get(f"{server.url}/v1/conversations/{conversation_id}", headers=auth(key))


def chat(
    server: ServerProcess,
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


def user(text: str) -> dict[str, Any]:
    """A user message."""
    return {"role": "user", "content": text}


def data_events(text: str) -> list[str]:
    """The payloads of the `data:` lines of an SSE body."""
    return [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]


def identity(key: str) -> str:
    """The caller identity the issue defines: SHA-256 hex of the bearer token."""
    return hashlib.sha256(key.encode()).hexdigest()


def attempts(database_url: str, key: str) -> list[dict[str, Any]]:
    """The request-log rows of one caller, oldest first (read straight from the database)."""
    query = (
        "SELECT conversation_id, model, status, error, latency_ms, prompt_tokens, completion_tokens "
        "FROM attempts WHERE owner = {} ORDER BY created_at, pk"
    )
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database or "") as connection:
            connection.row_factory = sqlite3.Row
            return [dict(r) for r in connection.execute(query.format("?"), (identity(key),))]

    async def run() -> list[dict[str, Any]]:
        import asyncpg

        connection = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
        )
        try:
            return [dict(r) for r in await connection.fetch(query.format("$1"), identity(key))]
        finally:
            await connection.close()

    return asyncio.run(run())

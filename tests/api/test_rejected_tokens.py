"""Pass-through mode: a token the upstream never accepted stores nothing; conversations per caller bounded."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.mock_upstream.app import create_mock_app
from tests.hostile import row_counts
from tests.inprocess import Gateway, bearer, running_gateway

BAD = "sk-bad-made-up-token"  # the mock upstream answers 401 to tokens starting with sk-bad


def good() -> str:
    """A token the mock upstream accepts, new for each test (the database is shared by the module)."""
    return f"sk-accepted-{secrets.token_hex(6)}"


@pytest.fixture
async def gateway(tmp_path: Path, database_url: str) -> AsyncIterator[Gateway]:
    """Pass-through gateway before the mock upstream (SQLite, and Postgres when configured)."""
    upstream = httpx.ASGITransport(app=create_mock_app())
    async with running_gateway(tmp_path, upstream, database_url=database_url) as gw:
        yield gw


@pytest.fixture
async def bounded(tmp_path: Path, database_url: str) -> AsyncIterator[Gateway]:
    """Pass-through gateway before the mock upstream, at most 3 conversations per caller."""
    upstream = httpx.ASGITransport(app=create_mock_app())
    async with running_gateway(
        tmp_path, upstream, database_url=database_url, max_conversations_per_caller=3
    ) as gw:
        yield gw


async def conversations(gateway: Gateway) -> int:
    """Stored conversations, all callers."""
    return (await row_counts(gateway.settings.database_url)).counts["conversations"]


def chat(content: str = "hi") -> dict[str, object]:
    """A chat body."""
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}


async def test_a_token_the_upstream_rejects_cannot_create_or_change_conversations(gateway: Gateway) -> None:
    before = await row_counts(gateway.settings.database_url)
    big = {"id": "spam", "system_prompt": "x" * 100_000}
    response = await gateway.client.post("/v1/conversations", json=big, headers=bearer(BAD))
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and "Incorrect API key" in error["message"]
    for method in ("POST", "PATCH", "DELETE"):
        body = {"metadata": {"a": "b"}} if method != "DELETE" else None
        answer = await gateway.client.request(
            method, "/v1/conversations/spam", json=body, headers=bearer(BAD)
        )
        assert answer.status_code == 401, (method, answer.text)
    assert before.diff(await row_counts(gateway.settings.database_url)) == {}


async def test_an_accepted_token_is_checked_once_then_remembered(gateway: Gateway) -> None:
    token, before = good(), await conversations(gateway)
    for n in range(2):
        response = await gateway.client.post("/v1/conversations", json={"id": f"c{n}"}, headers=bearer(token))
        assert response.status_code == 200, response.text
    checks = [r for r in gateway.sent if r.url.path == "/v1/models"]
    assert len(checks) == 1 and checks[0].headers["authorization"] == f"Bearer {token}"
    assert await conversations(gateway) == before + 2


async def test_conversations_per_caller_are_bounded(bounded: Gateway) -> None:
    gateway, token = bounded, good()
    before = await conversations(gateway)
    for n in range(3):
        response = await gateway.client.post("/v1/conversations", json={"id": f"c{n}"}, headers=bearer(token))
        assert response.status_code == 200, response.text
    refused = await gateway.client.post("/v1/conversations", json={"id": "c3"}, headers=bearer(token))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "conversation_limit_reached"
    assert refused.headers["x-should-retry"] == "false"
    calls = len(gateway.sent)
    headers = {**bearer(token), "x-conversation-id": "via-chat"}
    refused = await gateway.client.post("/v1/chat/completions", json=chat(), headers=headers)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "conversation_limit_reached"
    assert len(gateway.sent) == calls  # refused before the upstream call
    response = {"model": "gpt-4o-mini", "input": "a new conversation through the Responses API"}
    refused = await gateway.client.post("/v1/responses", json=response, headers=bearer(token))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "conversation_limit_reached"
    assert len(gateway.sent) == calls
    existing = {**bearer(token), "x-conversation-id": "c0"}
    assert (
        await gateway.client.post("/v1/chat/completions", json=chat(), headers=existing)
    ).status_code == 200
    other = {**bearer(good()), "x-conversation-id": "via-chat"}
    assert (await gateway.client.post("/v1/chat/completions", json=chat(), headers=other)).status_code == 200
    assert (await gateway.client.delete("/v1/conversations/c1", headers=bearer(token))).status_code == 200
    assert (
        await gateway.client.post("/v1/chat/completions", json=chat(), headers=headers)
    ).status_code == 200
    assert await conversations(gateway) == before + 4

"""Hostile request bodies: compression bombs, deep nesting, and big bodies that must not stall the event loop.

In process, both modes, in front of the mock upstream.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

import gateway.api.chat
import gateway.turns
from gateway.app import create_app
from gateway.config import Settings
from gateway.mock_upstream.app import create_mock_app

ADMIN = "admin-key-bodies"
LIMIT = 1024 * 1024


class Recording(httpx.AsyncBaseTransport):
    """Forwards to the mock upstream, remembering the requests it reached."""

    def __init__(self) -> None:
        self.inner = httpx.ASGITransport(app=create_mock_app())
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Record (with the body read), then forward."""
        await request.aread()
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


class Harness:
    """The gateway in process and the upstream requests it made."""

    def __init__(self, client: httpx.AsyncClient, upstream: Recording, token: str) -> None:
        self.client = client
        self.upstream = upstream
        self.token = token

    def headers(self, **extra: str) -> dict[str, str]:
        """The caller's headers."""
        return {"authorization": f"Bearer {self.token}", **extra}


@pytest.fixture(params=["pass-through", "gateway-keys"])
async def harness(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The gateway with a 1 MiB body limit, in either mode."""
    held = "sk-upstream" if request.param == "gateway-keys" else None
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        upstream_url="http://upstream.test/v1",
        upstream_api_key=held,
        admin_key=ADMIN,
        max_body_bytes=LIMIT,
    )
    upstream = Recording()
    app = create_app(settings, transport=upstream)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            token = "sk-caller"
            if held:
                made = await client.post(
                    "/admin/keys", json={"name": "bodies"}, headers={"authorization": f"Bearer {ADMIN}"}
                )
                token = made.json()["secret"]
            yield Harness(client, upstream, token)


def bomb(inflated: int, encoding: str = "gzip") -> bytes:
    """A JSON body of `inflated` bytes, compressed (a few KiB)."""
    payload = b'{"model": "text-embedding-3-small", "input": "' + b"a" * inflated + b'"}'
    return gzip.compress(payload) if encoding == "gzip" else zlib.compress(payload)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_body_that_inflates_beyond_the_limit_is_refused_413(
    harness: Harness, encoding: str
) -> None:
    body = bomb(8 * LIMIT, encoding)
    assert len(body) < LIMIT // 10
    response = await harness.client.post(
        "/v1/embeddings",
        content=body,
        headers=harness.headers(**{"content-encoding": encoding, "content-type": "application/json"}),
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    health = await harness.client.get("/healthz")
    assert health.status_code == 200


async def test_a_compressed_body_within_the_limit_is_forwarded_unchanged(harness: Harness) -> None:
    body = gzip.compress(json.dumps({"model": "text-embedding-3-small", "input": "hello"}).encode())
    response = await harness.client.post(
        "/v1/embeddings",
        content=body,
        headers=harness.headers(**{"content-encoding": "gzip", "content-type": "application/json"}),
    )
    assert response.status_code < 500, response.text  # the mock reads no gzip: it answers 400 itself
    sent = harness.upstream.requests[-1]
    assert sent.content == body and sent.headers["content-encoding"] == "gzip"


async def test_a_compressed_chat_body_is_read_and_a_bomb_refused(harness: Harness) -> None:
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "zipped"}]}
    headers = harness.headers(**{"content-encoding": "gzip", "content-type": "application/json"})
    fine = await harness.client.post(
        "/v1/chat/completions", content=gzip.compress(json.dumps(chat).encode()), headers=headers
    )
    assert fine.status_code == 200, fine.text
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a" * 4 * LIMIT}]}
    refused = await harness.client.post(
        "/v1/chat/completions", content=gzip.compress(json.dumps(big).encode()), headers=headers
    )
    assert refused.status_code == 413
    odd = await harness.client.post(
        "/v1/chat/completions", content=b"\x00\x01", headers=harness.headers(**{"content-encoding": "br"})
    )
    assert odd.status_code == 415 and odd.json()["error"]["code"] == "unsupported_content_encoding"


def nested(depth: int) -> str:
    """A chat body with a field nesting arrays `depth` levels deep (built as text: no recursion here)."""
    return (
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
        '"function", "function": {"name": "f", "parameters": {"type": "object", "deep": '
        + "[" * (depth - 5)
        + "]" * (depth - 5)
        + "}}}]}"
    )


@pytest.mark.parametrize("depth", [200, 960])
async def test_json_nested_too_deep_is_a_400(harness: Harness, depth: int) -> None:
    for headers in (harness.headers(), harness.headers(**{"x-conversation-id": "deep"})):
        response = await harness.client.post("/v1/chat/completions", content=nested(depth), headers=headers)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    created = await harness.client.post(
        "/v1/conversations",
        content='{"id": "deep", "metadata": ' + "[" * depth + "]" * depth + "}",
        headers=harness.headers(),
    )
    assert created.status_code == 400


async def test_nesting_an_openai_request_uses_is_accepted(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/chat/completions", content=nested(60), headers=harness.headers()
    )
    assert response.status_code == 200, response.text


def on_loop_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Where the gateway parsed, counted and serialized: (what, on the event loop's thread)."""
    seen: list[tuple[str, bool]] = []

    def spy(name: str, module: Any, attribute: str) -> None:
        real = getattr(module, attribute)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            seen.append((name, on_loop_thread()))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, attribute, wrapped)

    spy("parse", gateway.api.chat, "parse_json_object")
    spy("count", gateway.turns, "count_message_tokens")
    spy("digest", gateway.turns, "turn_digests")
    return seen


BIG_BODIES = {
    "one 900 KB message": [{"role": "user", "content": "word " * 180_000}],
    "20,000 tiny messages": [{"role": "user", "content": "hi"}] * 20_000,
}


@pytest.mark.parametrize("messages", list(BIG_BODIES.values()), ids=list(BIG_BODIES))
async def test_big_bodies_are_parsed_counted_and_serialized_off_the_event_loop(
    harness: Harness, threads: list[tuple[str, bool]], messages: list[dict[str, Any]]
) -> None:
    body = {"model": "gpt-4o-mini", "messages": messages}
    response = await harness.client.post(
        "/v1/chat/completions", json=body, headers=harness.headers(**{"x-conversation-id": "big"})
    )
    assert response.status_code == 200, response.text
    assert {name for name, _ in threads} >= {"parse", "count", "digest"}
    assert not [name for name, on_loop in threads if on_loop], threads


async def test_small_bodies_stay_on_the_loop(harness: Harness, threads: list[tuple[str, bool]]) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    response = await harness.client.post(
        "/v1/chat/completions", json=body, headers=harness.headers(**{"x-conversation-id": "small"})
    )
    assert response.status_code == 200
    assert all(on_loop for _, on_loop in threads)


@pytest.mark.parametrize("depth", [960, 5000])
async def test_a_deeply_nested_pass_through_body_is_never_a_500(harness: Harness, depth: int) -> None:
    body = '{"model": "text-embedding-3-small", "input": ' + "[" * depth + "]" * depth + "}"
    response = await harness.client.post(
        "/v1/embeddings", content=body, headers=harness.headers(**{"content-type": "application/json"})
    )
    assert response.status_code < 500, response.text
    if depth == 960 and harness.token != "sk-caller":  # gateway-key mode reads the body to charge it
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    health = await harness.client.get("/v1/models", headers=harness.headers())
    assert health.status_code == 200

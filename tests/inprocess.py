"""The gateway app in process, for tests that need no real socket.

Two shapes: `inprocess_gateway` (the gateway in front of the mock upstream app, driven by the official SDK
or a framework) and `running_gateway` (the gateway in front of any transport, recording every upstream
request, with paths set from the raw path as uvicorn does). `ASGITransport` buffers streamed responses, so
streams arrive whole; tests of chunk timing stay in tests/e2e.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
from asgi_lifespan import LifespanManager
from openai import AsyncOpenAI
from starlette.types import ASGIApp

from gateway.app import create_app
from gateway.config import Settings
from gateway.mock_upstream.app import create_mock_app

GATEWAY_URL = "http://gateway.test"


@dataclass
class InProcess:
    """A running gateway app and the mock upstream app behind it."""

    app: ASGIApp
    mock: Any  # the mock upstream's Starlette app (its request log is on app.state)

    def http_client(self) -> httpx.AsyncClient:
        """An httpx client that calls the gateway in process."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=GATEWAY_URL, timeout=60
        )

    def sdk(self, api_key: str, conversation_id: str | None = None, **headers: str) -> AsyncOpenAI:
        """The official SDK pointed at the gateway, with `X-Conversation-Id` when given."""
        if conversation_id is not None:
            headers["X-Conversation-Id"] = conversation_id
        return AsyncOpenAI(
            base_url=GATEWAY_URL + "/v1",
            api_key=api_key,
            max_retries=0,
            default_headers=headers,
            http_client=self.http_client(),
        )

    def upstream_bodies(self) -> list[dict[str, Any]]:
        """The chat bodies the mock upstream accepted, oldest first."""
        return [entry["body"] for entry in self.mock.state.mock_requests]

    def last_upstream_messages(self) -> list[dict[str, Any]]:
        """The messages of the last request the upstream accepted."""
        messages: list[dict[str, Any]] = self.upstream_bodies()[-1]["messages"]
        return messages


@contextlib.asynccontextmanager
async def inprocess_gateway(tmp_path: Path, **overrides: Any) -> AsyncIterator[InProcess]:
    """The gateway (temp SQLite, settings `overrides`) in front of a fresh mock upstream, both in process."""
    mock = create_mock_app()
    options: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "upstream_url": "http://upstream.test/v1",
    }
    app = create_app(Settings(**(options | overrides)), transport=httpx.ASGITransport(app=mock))
    async with LifespanManager(app, startup_timeout=60) as manager:
        yield InProcess(manager.app, mock)


UPSTREAM_BASE = "http://upstream.test/v1"


class RecordingTransport(httpx.AsyncBaseTransport):
    """Forwards to another transport and keeps every request the gateway sent upstream."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Record, then forward."""
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


class UvicornPaths:
    """Sets `scope["path"]` from the raw path as uvicorn does (percent-decoded, dot segments kept).

    httpx's ASGITransport passes its own normalized path, which would hide what a real server hands the app.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Fix the path, then run the app."""
        if scope["type"] == "http":
            scope = {**scope, "path": unquote(scope["raw_path"].decode("latin-1"))}
        await self.app(scope, receive, send)


class Gateway:
    """A running in-process gateway: its HTTP client, settings and the upstream requests it made."""

    def __init__(
        self, client: httpx.AsyncClient, settings: Settings, upstream: RecordingTransport, app: Any
    ) -> None:
        self.client = client
        self.app = app
        self.settings = settings
        self.upstream = upstream

    @property
    def sent(self) -> list[httpx.Request]:
        """Requests that reached the upstream, oldest first."""
        return self.upstream.requests


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path, upstream: httpx.AsyncBaseTransport, **overrides: Any
) -> AsyncIterator[Gateway]:
    """Run the app with a temporary SQLite file in front of `upstream`."""
    options: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "upstream_url": UPSTREAM_BASE,
    }
    settings = Settings(**(options | overrides))
    recording = RecordingTransport(upstream)
    app = create_app(settings, transport=recording)
    async with LifespanManager(app, startup_timeout=60) as manager:
        wrapped = UvicornPaths(manager.app)
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield Gateway(client, settings, recording, wrapped)


async def raw_request(
    gateway: Gateway, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> httpx.Response:
    """Send a request with this exact target straight to the app (httpx would normalize dot segments)."""
    raw_path, _, query = target.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "",  # set from raw_path by UvicornPaths
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"gateway.test"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("gateway.test", 80),
    }
    sent = False
    status = 0
    response_headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.extend(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await gateway.app(scope, receive, send)
    return httpx.Response(status, headers=response_headers, content=b"".join(chunks))


class _Stream(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def upstream_response(
    status: int, data: Any = None, *, chunks: list[bytes] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    """A streamed upstream response for httpx.MockTransport (the gateway reads upstream bodies raw)."""
    if chunks is None:
        chunks = [json.dumps(data).encode()]
        headers = {"content-type": "application/json", **(headers or {})}
    return httpx.Response(status, headers=headers, stream=_Stream(chunks))


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"authorization": f"Bearer {token}"}

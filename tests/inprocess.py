"""The gateway app in process (ASGITransport) before an in-process upstream that records every request."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.config import Settings

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

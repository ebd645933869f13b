"""In-process fixtures for the Responses API: the gateway app before the mock upstream app, SDK clients."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.config import Settings
from gateway.mock_upstream.app import create_mock_app


class RecordingTransport(httpx.AsyncBaseTransport):
    """Forwards to the mock upstream app and keeps the chat bodies it was sent."""

    def __init__(self) -> None:
        self.inner = httpx.ASGITransport(app=create_mock_app())
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Record the JSON body, then let the mock answer."""
        body = await request.aread()
        self.paths.append(f"{request.method} {request.url.path}")
        if body:
            self.bodies.append(json.loads(body))
        return await self.inner.handle_async_request(request)


@contextlib.asynccontextmanager
async def gateway_app(
    database: Path | str, upstream: httpx.AsyncBaseTransport | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the gateway app in front of `upstream` (the mock).

    `database` is a database URL, or a folder for a new SQLite file.
    """
    url = database if isinstance(database, str) else f"sqlite+aiosqlite:///{database / 'gw.db'}"
    config = Settings(database_url=url, upstream_url="http://up/v1", **settings)
    app = create_app(config, transport=upstream or RecordingTransport())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as http:
            yield http


def sdk(http: httpx.AsyncClient, key: str = "sk-test-one", **options: Any) -> openai.AsyncOpenAI:
    """The official SDK talking to the in-process gateway."""
    client = httpx.AsyncClient(transport=http._transport, base_url="http://gw/v1", timeout=30)
    # The gateway's in-process transport: the SDK drives it like any httpx client.
    return openai.AsyncOpenAI(api_key=key, base_url="http://gw/v1", http_client=client, **options)  # type: ignore[arg-type]


def plain(model: Any) -> Any:
    """An SDK object as plain JSON data (its own to_dict), typed loosely for assertions."""
    return model.to_dict()

"""The gateway app in process in front of an upstream app, driven by the official SDK (or a framework).

`ASGITransport` buffers streamed responses, so streams arrive whole; tests of chunk timing stay in tests/e2e.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

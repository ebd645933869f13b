"""The access middleware in process: an unexpected failure still gets a request id, a log line and a count."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.config import Settings


def broken_upstream(request: httpx.Request) -> httpx.Response:
    """An upstream transport that fails in a way the gateway does not expect."""
    raise RuntimeError("a bug, not a network error")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a broken upstream, driven in process."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", upstream_url="http://up/v1")
    app = create_app(settings, transport=httpx.MockTransport(broken_upstream))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield http


async def test_an_unexpected_error_is_a_logged_counted_500_with_a_request_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    response = await client.post(
        "/v1/chat/completions",
        headers={"Authorization": "Bearer sk-test", "X-Conversation-Id": "c1"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    request_id = response.headers["x-gateway-request-id"]
    (line,) = [r for r in caplog.records if r.name == "gateway.access"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == request_id
    assert fields["status"] == 500 and fields["incomplete"] is True and fields["conversation_id"] == "c1"
    metrics = (await client.get("/metrics")).text
    assert 'gateway_requests_total{method="POST",route="/v1/chat/completions",status="500"} 1.0' in metrics

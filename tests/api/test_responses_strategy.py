"""The Responses API takes X-History-Strategy like chat completions (it runs on the same turns)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.config import Settings
from gateway.mock_upstream import create_mock_app

AUTH = {"Authorization": "Bearer sk-responses-strategy"}


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, upstream_url="http://mock/v1")
    app = create_app(settings, transport=httpx.ASGITransport(app=create_mock_app()))
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def respond(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await http.post(
        "/v1/responses", json={"model": "gpt-4o-mini", **body}, headers={**AUTH, **headers}
    )


async def test_responses_take_the_strategy_header(http: httpx.AsyncClient) -> None:
    refused = await respond(http, {"input": "hi"}, **{"X-History-Strategy": "fifo"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "X-History-Strategy"
    first = (await respond(http, {"input": "one"})).json()
    previous = first["id"]
    for text in ("two", "three", "four"):
        answer = await respond(
            http,
            {"input": text, "previous_response_id": previous},
            **{"X-History-Strategy": "summarize", "X-Max-History-Messages": "4"},
        )
        assert answer.status_code == 200, answer.text
        previous = answer.json()["id"]
    conversation = first["conversation"]["id"]
    found = (await http.get(f"/v1/conversations/{conversation}", headers=AUTH)).json()
    # the fourth turn found 6 stored messages over a limit of 4: a cut folded the 4 oldest into a summary
    assert found["summary"] is not None and found["summary"]["through"] == 4

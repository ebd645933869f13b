"""Safe retries of responses: a retry that arrives while the first try still runs gets the same response."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.responses_support import RecordingTransport, gateway_app

MODEL = "gpt-4o-mini"
AUTH = {"Authorization": "Bearer sk-test-one"}


class GatedTransport(RecordingTransport):
    """The mock upstream, holding any request whose last message says HOLD until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Hold HOLD requests at the gate, then answer like the mock."""
        body = json.loads(await request.aread())
        if "HOLD" in str(body["messages"][-1].get("content")):
            self.arrived.set()
            await self.release.wait()
        return await super().handle_async_request(request)


@pytest.fixture
def upstream() -> GatedTransport:
    """The gated mock upstream."""
    return GatedTransport()


@pytest.fixture
async def http(database_url: str, upstream: GatedTransport) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in process, on each database backend (a module shares one database)."""
    async with gateway_app(database_url, upstream) as client:
        yield client


async def post(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    """POST /v1/responses as the default caller."""
    return await http.post("/v1/responses", json={"model": MODEL, **body}, headers={**AUTH, **headers})


async def first_and_retry(
    http: httpx.AsyncClient, upstream: GatedTransport, body: dict[str, Any], retry_headers: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send `body`, then its retry while the first is held upstream; release; both answers."""
    first = asyncio.create_task(
        post(http, body, **{k: v for k, v in retry_headers.items() if k != "x-stainless-retry-count"})
    )
    await upstream.arrived.wait()
    retry = asyncio.create_task(post(http, body, **retry_headers))
    for _ in range(20):  # let the retry reach the conversation's lock (it is correct either way)
        await asyncio.sleep(0)
    upstream.release.set()
    answers = await asyncio.gather(first, retry)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    return answers[0].json(), answers[1].json()


def held_calls(upstream: GatedTransport) -> int:
    """How many upstream calls carried a HOLD message last."""
    return sum("HOLD" in str(body["messages"][-1].get("content")) for body in upstream.bodies)


async def test_an_sdk_retry_of_a_running_continuation_gets_the_same_response(
    http: httpx.AsyncClient, upstream: GatedTransport
) -> None:
    start = (await post(http, {"input": "start"})).json()
    body = {"input": "HOLD one", "previous_response_id": start["id"]}
    first, retry = await first_and_retry(http, upstream, body, {"x-stainless-retry-count": "1"})
    assert retry["id"] == first["id"] and retry["conversation"] == start["conversation"]
    assert held_calls(upstream) == 1


async def test_an_sdk_retry_of_a_running_first_response_gets_the_same_response(
    http: httpx.AsyncClient, upstream: GatedTransport
) -> None:
    body = {"input": "HOLD first", "stream": True}
    first = asyncio.create_task(http.post("/v1/responses", json={"model": MODEL, **body}, headers=AUTH))
    await upstream.arrived.wait()
    retry = asyncio.create_task(
        http.post(
            "/v1/responses", json={"model": MODEL, **body}, headers={**AUTH, "x-stainless-retry-count": "1"}
        )
    )
    for _ in range(20):
        await asyncio.sleep(0)
    upstream.release.set()
    answers = await asyncio.gather(first, retry)
    finals = [json.loads(a.text.strip().split("\n")[-1].removeprefix("data: ")) for a in answers]
    assert finals[0]["type"] == "response.completed"
    assert finals[1]["response"]["id"] == finals[0]["response"]["id"]
    assert answers[1].headers["x-gateway-replayed"] == "true" and held_calls(upstream) == 1


async def test_an_idempotent_retry_of_a_running_first_response_gets_the_same_response(
    http: httpx.AsyncClient, upstream: GatedTransport
) -> None:
    body = {"input": "HOLD two"}
    first, retry = await first_and_retry(http, upstream, body, {"Idempotency-Key": "key-two"})
    assert retry["id"] == first["id"] and held_calls(upstream) == 1


async def test_an_idempotent_retry_of_a_running_fork_gets_the_same_response(
    http: httpx.AsyncClient, upstream: GatedTransport
) -> None:
    start = (await post(http, {"input": "start"})).json()
    await post(http, {"input": "next", "previous_response_id": start["id"]})
    body = {"input": "HOLD three", "previous_response_id": start["id"]}
    first, retry = await first_and_retry(http, upstream, body, {"Idempotency-Key": "key-three"})
    assert retry["id"] == first["id"] and first["conversation"] != start["conversation"]
    assert held_calls(upstream) == 1


async def test_a_key_reused_for_another_request_is_a_400(http: httpx.AsyncClient) -> None:
    assert (await post(http, {"input": "a"}, **{"Idempotency-Key": "k"})).status_code == 200
    reused = await post(http, {"input": "b"}, **{"Idempotency-Key": "k"})
    assert reused.status_code == 400 and reused.json()["error"]["code"] == "idempotency_key_reused"

"""The upstream request built without `build_request` is the one `build_request` would build."""

from __future__ import annotations

import httpx
import pytest

from gateway.config import Settings
from gateway.upstream import UpstreamClient, create_http_client


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json", "authorization": "Bearer sk-x", "User-Agent": "sdk/1.0"},
        {"Accept": "text/event-stream", "accept-encoding": "identity"},
        {},
    ],
)
async def test_the_request_has_the_client_defaults_headers_and_timeouts(headers: dict[str, str]) -> None:
    settings = Settings(upstream_url="http://127.0.0.1:9/v1", upstream_timeout=42.0)
    http = create_http_client(settings, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    upstream = UpstreamClient(http, settings)
    seen: list[httpx.Request] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    upstream._transport = httpx.MockTransport(handle)
    response = await upstream.open("POST", upstream.chat_url, headers, b'{"model":"m"}')
    await response.aclose()
    expected = http.build_request("POST", upstream.chat_url, headers=headers, content=b'{"model":"m"}')
    assert seen[0].headers.raw == expected.headers.raw
    assert seen[0].extensions == expected.extensions and seen[0].extensions["timeout"]["read"] == 42.0
    assert seen[0].url == expected.url and seen[0].content == expected.content
    await http.aclose()

"""Proxied paths: forwarded byte for byte below the upstream base, never outside it (fuzzed), or 400."""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Settings
from gateway.upstream import UpstreamClient, create_http_client
from tests.inprocess import Gateway, raw_request, running_gateway, upstream_response

BASE = "http://upstream.test/openai/v1"  # a base with a path, so that escaping it shows
TOKEN = "sk-path-tester"


def ok_upstream(request: httpx.Request) -> httpx.Response:
    """Answers every request with an empty JSON object."""
    return upstream_response(200, {"object": "list", "data": []})


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """Pass-through gateway in front of a recording upstream whose base is /openai/v1."""
    async with running_gateway(tmp_path, httpx.MockTransport(ok_upstream), upstream_url=BASE) as gw:
        yield gw


async def send(gateway: Gateway, method: str, target: bytes) -> httpx.Response:
    """Send a request with this exact request target."""
    return await raw_request(gateway, method, target, [(b"authorization", f"Bearer {TOKEN}".encode())])


ESCAPING = [
    b"/v1/../internal/billing",
    b"/v1/%2e%2e/x",
    b"/v1/%2E%2e/x",
    b"/v1/.%2E/x",
    b"/v1/..%2f..%2fx",
    b"/v1/models/..",
    b"/v1/models/.",
    b"/v1/./models",
    b"/v1/..;/x",
    b"/v1/a%2Fb",
    b"/v1/a%5cb",
    b"/v1/a\\b",
    b"/v1/a%00b",
    b"/v1/a%7Fb",
    b"/v1/a%7fb",
    b"/v1/a%09b",
    b"/v1/a%0d%0aX-Injected:%201",
    b"/v1/a%zzb",
    b"/v1/a%2",
    b"/v1/caf\xc3\xa9",
    b"/v1/a|b",
    b'/v1/a"b',
]


@pytest.mark.parametrize("raw_path", ESCAPING, ids=[p.decode("latin-1") for p in ESCAPING])
async def test_unsafe_paths_are_400_and_never_reach_the_upstream(gateway: Gateway, raw_path: bytes) -> None:
    response = await send(gateway, "GET", raw_path)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_path" and error["type"] == "invalid_request_error"
    assert gateway.sent == []


async def test_the_raw_path_and_query_are_forwarded_as_sent(gateway: Gateway) -> None:
    raw = b"/v1/models/ft%3Agpt-4o%3Aacme%ff%41?x=%2F%41&y=a+b"
    response = await send(gateway, "GET", raw)
    assert response.status_code == 200, response.text
    (sent,) = gateway.sent
    assert sent.url.raw_path == b"/openai/v1/models/ft%3Agpt-4o%3Aacme%ff%41?x=%2F%41&y=a+b"


async def test_control_characters_in_the_query_are_400(gateway: Gateway) -> None:
    response = await send(gateway, "GET", b"/v1/models?x=a\x01b")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_path"
    assert gateway.sent == []


def _worst_case(raw: str) -> str:
    """How a lenient upstream could read a path: decoded twice, backslashes as slashes, dots resolved."""
    text = unquote(unquote(raw)).replace("\\", "/")
    resolved = posixpath.normpath(text)
    return resolved + ("/" if text.endswith("/") and resolved != "/" else "")


SEGMENT = st.one_of(
    st.sampled_from([".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2f", "%2F", "%5c", "\\", "%00", "%7f"]),
    st.sampled_from(["models", "files", "a", "x;y", "..;", "%252e%252e", "%u002e", "%c0%ae", "~", ""]),
    st.text(alphabet="abc.%25eEfF/\\;:@~-_0", max_size=8),
)


@given(segments=st.lists(SEGMENT, min_size=1, max_size=6), query=st.sampled_from(["", "?a=1", "?p=../x"]))
@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_fuzzed_paths_never_leave_the_upstream_base(
    gateway: Gateway, segments: list[str], query: str
) -> None:
    raw = ("/v1/" + "/".join(segments)).encode() + query.encode()
    before = len(gateway.sent)
    response = await send(gateway, "GET", raw)
    assert response.status_code in (200, 400), (raw, response.status_code, response.text)
    sent = gateway.sent[before:]
    if response.status_code == 400:
        assert sent == []
        return
    (request,) = sent
    upstream_raw = request.url.raw_path
    assert upstream_raw == b"/openai" + raw  # byte for byte below the base
    path = upstream_raw.split(b"?", 1)[0].decode("ascii")
    assert _worst_case(path).startswith("/openai/v1/"), raw
    # The production transport (aiohttp) parses the URL with yarl, which resolves dot segments.
    assert yarl.URL("http://upstream.test" + upstream_raw.decode("ascii")).path.startswith("/openai/v1/"), raw


async def test_the_production_transport_sends_the_path_byte_for_byte() -> None:
    """The aiohttp transport (yarl) would normalize %3A to ':' and %41 to 'A': the wire must not."""
    lines: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append(await reader.readline())
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings(upstream_url=f"http://127.0.0.1:{port}/openai/v1")
    below = b"/models/ft%3Agpt-4o%41%7e%ff?q=%41%2F&r=a+b"
    try:
        async with create_http_client(settings) as http:
            upstream = UpstreamClient(http, settings)
            response = await upstream.open("GET", upstream.raw_url(below), {}, None)
            await response.aclose()
    finally:
        server.close()
        await server.wait_closed()
    assert lines == [b"GET /openai/v1" + below + b" HTTP/1.1\r\n"]

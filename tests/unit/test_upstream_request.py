"""The upstream request built without `build_request` is the one `build_request` would build."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.config import Settings
from gateway.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnreachable
from gateway.upstream import UpstreamClient, create_http_client, read_body
from gateway.upstream_transport import AiohttpBody


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


class WireUpstream:
    """A raw HTTP/1.1 server that records each request as it arrived (request line, headers, body)."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, list[tuple[bytes, bytes]], bytes]] = []
        self.server: asyncio.Server | None = None
        self.connections: list[asyncio.Task[None]] = []

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await self._exchanges(reader, writer)
        finally:
            writer.close()

    async def _exchanges(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client closed the connection
                return
            line, *fields = head[:-4].split(b"\r\n")
            headers = [
                (name.strip().lower(), value.strip()) for name, value in (f.split(b":", 1) for f in fields)
            ]
            found = dict(headers)
            if b"content-length" in found:
                body = await reader.readexactly(int(found[b"content-length"]))
            elif found.get(b"transfer-encoding") == b"chunked":
                body = b""
                while size := int((await reader.readline()).strip(), 16):
                    body += await reader.readexactly(size)
                    await reader.readline()
                await reader.readline()
            else:
                body = b""
            self.seen.append((line, sorted(headers), body))
            writer.write(
                b"HTTP/1.1 201 Made\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
            )
            await writer.drain()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await asyncio.wait_for(asyncio.gather(*self.connections), 5)  # the clients closed theirs


async def _chunks() -> AsyncIterator[bytes]:
    yield b'{"model":'
    yield b'"m"}'


@pytest.mark.parametrize("streamed", [False, True])
async def test_the_real_transport_sends_what_httpx_would(streamed: bool) -> None:
    """`open` on the real transport skips httpx.Request; the upstream gets the same request line, headers and
    body as from httpx's own transport sending the request `build_request` makes (a streamed body chunked)."""
    headers = {"content-type": "application/json", "authorization": "Bearer sk-x", "x-custom": "a b"}
    wire = WireUpstream()
    async with wire as base:
        settings = Settings(upstream_url=base)
        async with create_http_client(settings) as http:
            upstream = UpstreamClient(http, settings)
            url = upstream.raw_url(b"/files/a%3Ab%2F?x=%41")  # a path kept exactly as sent
            response = await upstream.open("POST", url, headers, _chunks() if streamed else b'{"model":"m"}')
            assert (response.status_code, await response.aread()) == (201, b"{}")
            assert response.headers["content-type"] == "application/json"
            assert response.reason_phrase == "Made"
        async with httpx.AsyncClient(headers=http.headers) as plain:
            sent = await plain.send(
                plain.build_request(
                    "POST", url, headers=headers, content=_chunks() if streamed else b'{"model":"m"}'
                )
            )
            await sent.aread()
    (line, got, body), (expected_line, expected, expected_body) = wire.seen
    assert line == expected_line == b"POST /v1/files/a%3Ab%2F?x=%41 HTTP/1.1"
    assert (got, body) == (expected, expected_body)
    assert (b"transfer-encoding", b"chunked") in got if streamed else (b"content-length", b"13") in got


async def test_a_refused_connection_and_a_silent_upstream_are_502_and_504() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the request, never answers, until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings(upstream_url=f"http://127.0.0.1:{port}/v1", upstream_timeout=0.2)
    async with create_http_client(settings) as http:
        upstream = UpstreamClient(http, settings)
        with pytest.raises(UpstreamTimeout):
            await upstream.open("POST", upstream.chat_url, {}, b"{}")
        server.close()
        await server.wait_closed()
        with pytest.raises(UpstreamUnreachable):
            await upstream.open("POST", upstream.chat_url, {}, b"{}")


@pytest.mark.parametrize("direct", [True, False])
async def test_a_body_past_the_size_limit_is_refused(direct: bool) -> None:
    """read_body stops once the body passes its limit (502), on the real transport's direct read and through
    httpx's layers alike; a body of exactly the limit is read whole."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = 100_000
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):  # until the client closes
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    settings = Settings(upstream_url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
    async with create_http_client(settings) as http:
        upstream = UpstreamClient(http, settings)
        if not direct:
            upstream._direct = None  # through httpx.Request and the transport's httpx interface
        # Refused after part of the body (its connection is not reused), then after all of it, then accepted.
        for limit, refused in ((1_000, True), (99_999, True), (100_000, False)):
            response = await upstream.open("GET", upstream.url("/models"), {}, None)
            assert isinstance(response.stream, AiohttpBody)
            try:
                if refused:
                    with pytest.raises(UpstreamProtocolError, match=f"size limit of {limit} bytes"):
                        await read_body(response, limit)
                else:
                    assert await read_body(response, limit) == b"x" * limit
            finally:
                await response.aclose()
    server.close()

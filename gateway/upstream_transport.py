"""The upstream transport: aiohttp (fast connection pooling) behind httpx's transport interface.

Everything the gateway sends upstream goes through one `httpx.AsyncClient` whose transport is this one, and
comes back as an `httpx.Response` whose errors are httpx's: the rest of the gateway speaks httpx, and tests
swap in httpx's own transports (`httpx.MockTransport`, an ASGI app).

`send` is the way in that the hot path takes: the request's method, URL and headers go straight to aiohttp,
without building an `httpx.Request` first (its header normalization, content encoding and the transport's
conversion back cost some 90 us of CPU per call, about a tenth of a stateful turn). `handle_async_request`,
httpx's way in, is `send` on a request that httpx has built.

aiohttp is imported at the first request (or by the app's warm-up, `load_aiohttp`, off the event loop), so
start-up does not wait for it. Its session keeps no cookies (one session serves every caller, and an
upstream's cookie must never ride along on another caller's request), follows no redirects, decompresses
nothing, and sends each URL exactly as given (the gateway forwards raw paths as received).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import anyio.to_thread
import httpx

if TYPE_CHECKING:
    import aiohttp

# How long an idle upstream connection is kept for reuse: under the 5 s after which uvicorn (behind vLLM,
# LiteLLM and most self-hosted OpenAI-compatible servers) closes idle connections. Kept longer, a turn could
# be written on a connection the upstream was closing at that moment and fail with 502 upstream_unreachable
# ("Can not write request body"), a request that cannot safely be retried.
IDLE_UPSTREAM_CONNECTION_SECONDS = 4.0
MAX_CONNECTIONS = 1000
CHUNK_BYTES = 16 * 1024  # the most a response body chunk holds (it comes as soon as any bytes arrive)

Content = bytes | AsyncIterator[bytes] | None
Timeouts = Mapping[str, float | None]  # httpx's timeout extension: connect, read, write, pool


def load_aiohttp() -> None:
    """Import aiohttp (blocking: call it from a worker thread).

    ~0.25 s, most of it the two TLS contexts aiohttp builds at import, each loading the system's CA
    certificates: the app's warm-up does it once the server is up, so start-up does not wait for it.
    """
    import aiohttp  # noqa: F401


class _HttpxErrors:
    """The context manager `httpx_errors` returns (a class: cheaper than a generator-based one)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        loaded = sys.modules.get("aiohttp")  # nothing raises its errors before it is imported
        if exc is not None and loaded is not None and isinstance(exc, loaded.ClientError):
            mapped = _as_httpx_error(cast("aiohttp.ClientError", exc))
            if mapped is not exc:  # another aiohttp error goes on as it is (translate_errors knows them)
                raise mapped from exc


_HTTPX_ERRORS = _HttpxErrors()


def httpx_errors() -> contextlib.AbstractContextManager[None]:
    """aiohttp's errors as the httpx errors an httpx transport raises (what `translate_errors` maps).

    Every failure to connect or to keep the connection (refused, reset, closed by the peer) is a
    ConnectTimeout, which the gateway answers as 502 upstream_unreachable; timeouts are 504.
    """
    return _HTTPX_ERRORS


def _as_httpx_error(exc: aiohttp.ClientError) -> Exception:
    import aiohttp

    message = str(exc)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.TimeoutException(message)
    if isinstance(exc, aiohttp.ClientConnectionError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return httpx.ProxyError(message)
    if isinstance(exc, aiohttp.InvalidUrlClientError | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message)
    return exc  # any other aiohttp error (translate_errors knows aiohttp's base class)


class AiohttpBody(httpx.AsyncByteStream):
    """An aiohttp response's body as httpx reads it: chunks as they come; closing releases the connection."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors():
            async for chunk in self._response.content.iter_chunked(CHUNK_BYTES):
                yield chunk

    async def next_chunk(self) -> bytes:
        """The next bytes of the body as they come (b"" at its end): what `upstream.read_body` reads a whole
        reply with, instead of iterating through httpx's layers."""
        with httpx_errors():
            return await self._response.content.readany()

    async def aclose(self) -> None:
        with httpx_errors():
            self._response.release()
            await self._response.wait_for_close()


@functools.lru_cache(maxsize=8)
def _client_timeout(connect: float | None, read: float | None, pool: float | None) -> aiohttp.ClientTimeout:
    """httpx's timeouts in aiohttp's terms: connect is the socket's connect, read each read, pool the wait
    for a connection (and the connect)."""
    import aiohttp

    return aiohttp.ClientTimeout(sock_connect=connect, sock_read=read, connect=pool)


def _session() -> aiohttp.ClientSession:
    """The aiohttp session (made in the running loop): pooled, without a cookie jar."""
    import aiohttp

    ssl = httpx.create_ssl_context(trust_env=False)  # certifi's CA bundle, as httpx itself uses
    connector = aiohttp.TCPConnector(
        limit=MAX_CONNECTIONS, keepalive_timeout=IDLE_UPSTREAM_CONNECTION_SECONDS, ssl=ssl
    )
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


class AiohttpTransport(httpx.AsyncBaseTransport):
    """The upstream transport; its aiohttp session is made at the first request (see the module)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._url_type: Any = None  # yarl.URL, once aiohttp (which brings yarl) is imported
        self._making = asyncio.Lock()

    async def _made(self) -> aiohttp.ClientSession:
        async with self._making:
            if self._session is None:
                # In a worker thread even when the warm-up has begun the import: a module that another
                # thread is still importing would make the event loop wait for it.
                await anyio.to_thread.run_sync(load_aiohttp)
                import yarl

                self._url_type = yarl.URL
                self._session = _session()
            return self._session

    async def send(
        self,
        method: str,
        url: str | httpx.URL,
        headers: Sequence[tuple[str, str]],
        content: Content,
        timeouts: Timeouts,
    ) -> httpx.Response:
        """Send one request and return the response, its body not yet read (the caller closes it).

        aiohttp adds Host, and Content-Length for a body of bytes; a body that is an async iterator goes
        with chunked transfer encoding.
        """
        session = self._session or await self._made()
        # taken as already percent-encoded: yarl would otherwise decode %3A to ':' and %41 to 'A'
        target = self._url_type(str(url), encoded=True)
        with httpx_errors():
            response = await session.request(
                method,
                target,
                headers=headers,
                data=content or None,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=_client_timeout(timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool")),
            )
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            response.status, headers=response.raw_headers, stream=AiohttpBody(response), extensions=extensions
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's way in: the request httpx built, sent as it is (its Host and Content-Length included)."""
        content: Content
        headers = request.headers.multi_items()
        try:
            content = request.content
        except httpx.RequestNotRead:  # a streamed body: aiohttp sends it chunked itself
            content = _stream(request.stream)
            headers = [(name, value) for name, value in headers if name != "transfer-encoding"]
        response = await self.send(
            request.method, request.url, headers, content, request.extensions.get("timeout", {})
        )
        response.request = request
        return response

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _stream(stream: httpx.AsyncByteStream | httpx.SyncByteStream) -> AsyncIterator[bytes]:
    assert isinstance(stream, httpx.AsyncByteStream)
    async for chunk in stream:
        yield chunk

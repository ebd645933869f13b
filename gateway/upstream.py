"""The one HTTP client to the upstream: URLs, headers, sending, and httpx errors as UpstreamErrors."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from gateway import headers as h
from gateway.config import Settings
from gateway.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnreachable
from gateway.upstream_transport import AiohttpBody, AiohttpTransport, load_aiohttp

__all__ = [
    "UpstreamClient",
    "connection_nominated",
    "create_http_client",
    "load_aiohttp",
    "read_body",
    "response_headers",
    "translate_errors",
]


def create_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The process-wide upstream client: aiohttp transport (fast pooling), generous read timeout."""
    if transport is None:
        transport = AiohttpTransport()
    timeout = httpx.Timeout(settings.upstream_timeout, connect=settings.upstream_connect_timeout)
    # One client serves every caller: a cookie one caller's upstream answer sets must never ride along on
    # another caller's request, so neither httpx nor aiohttp may keep cookies.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False, cookies=no_cookies)


class _TranslateErrors:
    """The context manager `translate_errors` returns (a class: a generator-based one costs several times
    as much, and every upstream call enters a few)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        if isinstance(exc, httpx.ConnectTimeout):
            raise UpstreamUnreachable(f"Could not reach the upstream: {exc or 'connection failed'}") from exc
        if isinstance(exc, httpx.TimeoutException):
            raise UpstreamTimeout("The upstream did not answer in time.") from exc
        if isinstance(exc, _transport_errors()):
            raise UpstreamUnreachable(
                f"The upstream connection failed: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc


_TRANSLATE_ERRORS = _TranslateErrors()


def translate_errors() -> contextlib.AbstractContextManager[None]:
    """Map transport failures to 502/504.

    The aiohttp transport reports every connection error (refused, closed after reading the request) as
    httpx.ConnectTimeout (upstream_transport.httpx_errors), so that one is "unreachable" (502), while
    read/write/pool timeouts are 504.
    """
    return _TRANSLATE_ERRORS


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a failed transport raises: httpx's and the socket's errors, and aiohttp's own once it is
    loaded (before that nothing can raise them; read when an error is caught, as the first request
    may be the one that loads aiohttp)."""
    aiohttp = sys.modules.get("aiohttp")
    extra = (aiohttp.ClientError,) if aiohttp is not None else ()
    return (httpx.TransportError, OSError, *extra)


class UpstreamClient:
    """Sends requests to the configured OpenAI-compatible base URL."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self.http = http
        # Requests are built by the client (its timeouts and default headers) but sent straight through
        # its transport: a proxy must not keep the upstream's cookies in a jar shared by every caller,
        # nor follow redirects, and skipping those layers is cheaper too.
        self._transport = http._transport
        self.base_url = settings.upstream_url
        self.api_key = settings.upstream_api_key
        self.admin_key = settings.admin_key
        self.chat_url = httpx.URL(self.url("/chat/completions"))
        self._base = httpx.URL(self.base_url)
        # What `build_request` would merge into every request, taken once: the client's default headers
        # and timeouts (its cookie jar accepts nothing, so it never adds a Cookie header).
        self._default_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in http.headers.raw]
        self._timeout = http.timeout.as_dict()
        self._direct = self._transport if isinstance(self._transport, AiohttpTransport) else None

    def raw_url(self, below_base: bytes) -> httpx.URL:
        """The upstream URL for a raw path and query below the base (`/files/x?y=1`), bytes kept as sent."""
        return self._base.copy_with(raw_path=self._base.raw_path.rstrip(b"/") + below_base)

    def url(self, path: str, query: str = "") -> str:
        """The upstream URL for a gateway path below /v1 (e.g. `/chat/completions`)."""
        return f"{self.base_url}{path}" + (f"?{query}" if query else "")

    def forward_headers(
        self, incoming: Mapping[str, str], caller_token: str, *, identity_encoding: bool
    ) -> dict[str, str]:
        """Copy end-to-end request headers; set Authorization to the gateway's key or the caller's token.

        When the gateway holds the key, none of the caller's credentials (or org/project routing) go upstream.
        """
        dropped = h.NOT_FORWARDED_UPSTREAM | connection_nominated(incoming)
        if self.api_key:
            dropped |= h.CALLER_CREDENTIALS
        out = {k: v for k, v in incoming.items() if k.lower() not in dropped}
        if self.admin_key:  # the admin key is the gateway's own secret: it never goes upstream
            out = {k: v for k, v in out.items() if self.admin_key not in v}
        token = self.api_key or caller_token
        if token:
            out["authorization"] = f"Bearer {token}"
        if identity_encoding:
            out["accept-encoding"] = "identity"
        elif "accept-encoding" in incoming:
            out["accept-encoding"] = incoming["accept-encoding"]
        return out

    async def open(
        self,
        method: str,
        url: str | httpx.URL,
        headers: Mapping[str, str],
        content: bytes | AsyncIterator[bytes] | None,
    ) -> httpx.Response:
        """Send a request and return the response with its body not yet read (caller closes it)."""
        merged = self._with_defaults(headers)
        with translate_errors():
            if self._direct is not None:  # the real transport: no httpx.Request to build (see its module)
                return await self._direct.send(method, url, merged, content, self._timeout)
            request = httpx.Request(
                method, url, headers=merged, content=content, extensions={"timeout": dict(self._timeout)}
            )
            return await self._transport.handle_async_request(request)

    def _with_defaults(self, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """`headers` after the client's default headers they do not name (as `build_request` merges them)."""
        given = {name.lower() for name in headers}
        kept = [(name, value) for name, value in self._default_headers if name.lower() not in given]
        return kept + list(headers.items())


async def read_body(response: httpx.Response, limit: int | None = None) -> bytes:
    """Read a whole (identity-encoded) upstream body, mapping transport failures."""
    stream = response.stream
    if isinstance(stream, AiohttpBody):  # the real transport: from aiohttp itself, no generators between
        next_chunk = stream.next_chunk
    else:
        chunks_in = response.aiter_raw()
        next_chunk = functools.partial(anext, chunks_in, b"")
    chunks = []
    size = 0
    with translate_errors():
        while chunk := await next_chunk():
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                raise _too_large(limit)
    return b"".join(chunks)


def _too_large(limit: int | None) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"The upstream response exceeded the size limit of {limit} bytes (GATEWAY_MAX_RESPONSE_BYTES)."
    )


def response_headers(upstream: httpx.Response) -> dict[str, str]:
    """Upstream response headers the client may see (no hop-by-hop, no set-cookie, no length)."""
    dropped = h.NOT_RETURNED | connection_nominated(upstream.headers)
    # latin-1 both ways keeps the upstream's bytes exactly (a non-ASCII value can never fail to encode).
    raw = ((k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream.headers.raw)
    return {k: v for k, v in raw if k.lower() not in dropped}


def connection_nominated(headers: Mapping[str, str]) -> frozenset[str]:
    """Header names a `Connection` header lists: hop-by-hop for this one connection (RFC 9110 7.6.1)."""
    value = headers.get("connection")
    if not value:
        return frozenset()
    return frozenset(name.strip().lower() for name in value.split(",") if name.strip())

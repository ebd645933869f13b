"""Helpers every handler shares: the services, the caller, bounded body reads, JSON responses."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Authenticator
from gateway.capture import READABLE_ENCODINGS, InflatedTooLarge, Inflater, content_encoding
from gateway.config import Settings
from gateway.errors import InvalidRequest, NotFound, RequestTooLarge, UnsupportedEncoding
from gateway.identity import CONVERSATION_ID_PATTERN
from gateway.metrics import Metrics
from gateway.pricing import Pricer
from gateway.responses.service import ResponseService
from gateway.store.database import Database
from gateway.token_check import TokenCheck
from gateway.turns import TurnService
from gateway.upstream import UpstreamClient
from gateway.views import render_json


@dataclass(frozen=True)
class Services:
    """Everything the lifespan opened, shared by all requests of one process."""

    settings: Settings
    db: Database
    upstream: UpstreamClient
    turns: TurnService
    pricer: Pricer
    auth: Authenticator
    metrics: Metrics
    token_check: TokenCheck
    responses: ResponseService


def path_conversation_id(request: Request) -> str:
    """The {conversation_id} of the path; an id no conversation can have answers 404 like an unknown one."""
    conversation_id: str = request.path_params["conversation_id"]
    if CONVERSATION_ID_PATTERN.fullmatch(conversation_id) is None:
        message = f"No conversation found with id '{conversation_id[:128]}'."
        raise NotFound(message, param="conversation_id")
    return conversation_id


def check_header_values(request: Request) -> None:
    """400 `invalid_header` for a header value with a non-ASCII or control byte (tab allowed).

    Such a value could not be forwarded upstream as it came (and HTTP gives it no meaning), so a request
    that carries one is refused before anything is sent or stored.
    """
    for name, value in request.scope["headers"]:
        if not _HEADER_VALUE.fullmatch(value):
            header = name.decode("latin-1")
            raise InvalidRequest(
                f"The value of the header {header!r} must be printable ASCII (no control characters).",
                param=header,
                code="invalid_header",
            )


_HEADER_VALUE = re.compile(rb"[\t\x20-\x7e]*")


def services(request: Request) -> Services:
    """The process's services, from the lifespan state."""
    found: Services = request.state.services
    return found


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is larger than the limit of {limit} bytes.")


def check_declared_length(request: Request, limit: int) -> None:
    """413 at once when the declared Content-Length is beyond `limit`."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


def _unreadable(encoding: str) -> UnsupportedEncoding:
    return UnsupportedEncoding(
        f"The gateway cannot read a request body in Content-Encoding '{encoding[:40]}'; "
        "send it uncompressed, or in gzip or deflate."
    )


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it exceeds `limit`, without buffering the excess.

    A body in gzip or deflate is inflated in a worker thread, and the limit applies to its inflated
    size too; any other Content-Encoding is refused (415).
    """
    body = LimitedBody(request, limit)
    if body.encoding not in READABLE_ENCODINGS:
        raise _unreadable(body.encoding)
    chunks: list[bytes] = []
    body.sink = chunks.append
    async for _ in body.chunks():
        pass
    return b"".join(chunks)


class LimitedBody:
    """The request body as a stream for forwarding, cut off once it exceeds `limit` (no buffering).

    When a `sink` is set, it receives the body's decoded bytes: a gzip or deflate body is inflated piece
    by piece in a worker thread (never on the event loop), and cut off (413) once its inflated size
    passes `limit` as well.
    """

    def __init__(self, request: Request, limit: int) -> None:
        check_declared_length(request, limit)
        self.request = request
        self.limit = limit
        self.exceeded = False
        self.encoding = content_encoding(request.headers)
        self.sink: Callable[[bytes], object] | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body's chunks; raise 413 (and remember it) when the total passes the limit."""
        size = 0
        compressed = self.sink is not None and self.encoding in READABLE_ENCODINGS - {"identity"}
        inflater = Inflater(self.encoding, self.limit) if compressed else None
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > self.limit:
                self.exceeded = True
                raise _too_large(self.limit)
            if self.sink is not None and chunk:
                self.sink(await self._decoded(inflater, chunk) if inflater is not None else chunk)
            yield chunk

    async def _decoded(self, inflater: Inflater, chunk: bytes) -> bytes:
        try:
            return await anyio.to_thread.run_sync(inflater.feed, chunk)
        except InflatedTooLarge:
            self.exceeded = True
            raise _too_large(self.limit) from None
        except zlib.error:
            raise InvalidRequest(
                f"The request body is not valid {self.encoding} data.", code="invalid_content_encoding"
            ) from None

    def error(self) -> RequestTooLarge:
        """The 413 to answer when forwarding failed because the body was cut off."""
        return _too_large(self.limit)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def exact_json_response(data: Any) -> Response:
    """A compact JSON response in which Decimal amounts (USD) are exact numbers."""
    return Response(render_json(data), media_type="application/json")

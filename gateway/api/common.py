"""Helpers every handler shares: the services, the caller, bounded body reads, JSON responses."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Authenticator
from gateway.config import Settings
from gateway.errors import InvalidRequest, NotFound, RequestTooLarge
from gateway.identity import CONVERSATION_ID_PATTERN
from gateway.metrics import Metrics
from gateway.pricing import Pricer
from gateway.responses.service import ResponseService
from gateway.store.database import Database
from gateway.token_check import TokenCheck
from gateway.turns import TurnService
from gateway.upstream import UpstreamClient


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


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it exceeds `limit`, without buffering the excess."""
    check_declared_length(request, limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class LimitedBody:
    """The request body as a stream for forwarding, cut off once it exceeds `limit` (no buffering)."""

    def __init__(self, request: Request, limit: int) -> None:
        check_declared_length(request, limit)
        self.request = request
        self.limit = limit
        self.exceeded = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body's chunks; raise 413 (and remember it) when the total passes the limit."""
        size = 0
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > self.limit:
                self.exceeded = True
                raise _too_large(self.limit)
            yield chunk

    def error(self) -> RequestTooLarge:
        """The 413 to answer when forwarding failed because the body was cut off."""
        return _too_large(self.limit)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")

"""Helpers every handler shares: the services, the caller, bounded body reads, JSON responses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Authenticator
from gateway.config import Settings
from gateway.errors import RequestTooLarge
from gateway.metrics import Metrics
from gateway.pricing import Pricer
from gateway.store.database import Database
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


def services(request: Request) -> Services:
    """The process's services, from the lifespan state."""
    found: Services = request.state.services
    return found


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it exceeds `limit`, without buffering the excess."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")

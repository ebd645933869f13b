"""Every other /v1/* request: forwarded unchanged, bodies streamed both ways."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

import anyio
import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway import headers as h
from gateway.api.common import services
from gateway.identity import bearer_token
from gateway.store.database import Database
from gateway.store.usage import record_attempt
from gateway.upstream import response_headers, translate_errors

PROXY_ENDPOINT = "/v1/{path:path}"  # the upstream-latency label of proxied calls


async def _log(db: Database, values: dict[str, object]) -> None:
    with anyio.CancelScope(shield=True):
        async with db.transaction() as session:
            await record_attempt(session, values)


async def proxy(request: Request) -> Response:
    """Forward the request as is (path, query, headers, body) and stream the answer back."""
    svc = services(request)
    caller = await svc.auth.identify(bearer_token(request.headers.get("authorization")))
    path = request.url.path.removeprefix("/v1")
    url = svc.upstream.url(path, request.url.query)
    headers = svc.upstream.forward_headers(dict(request.headers), caller.token, identity_encoding=False)
    started = time.monotonic()
    has_body = (
        request.method not in ("GET", "HEAD", "OPTIONS", "DELETE") or "content-length" in request.headers
    )
    content: AsyncIterator[bytes] | None = request.stream() if has_body else None
    upstream = await svc.upstream.open(request.method, url, headers, content)
    values: dict[str, object] = {
        "owner": caller.identity,
        "conversation_id": None,
        "request_id": getattr(request.state, "request_id", secrets.token_hex(8)),
        "upstream_request_id": (upstream.headers.get(h.REQUEST_ID) or "")[:200] or None,
        "endpoint": request.url.path[:200],
        "model": None,
        "response_model": None,
        "stream": False,
        "status": upstream.status_code,
        "error": None,
        "created_at": time.time(),
    }

    async def body() -> AsyncIterator[bytes]:
        try:
            with translate_errors():
                async for chunk in upstream.aiter_raw():
                    yield chunk
        except httpx.HTTPError as exc:
            values["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()

    async def finish() -> None:
        seconds = time.monotonic() - started
        values["latency_ms"] = seconds * 1000
        svc.metrics.observe_upstream(PROXY_ENDPOINT, seconds)
        await _log(svc.db, values)

    return StreamingResponse(
        body(),
        status_code=upstream.status_code,
        headers=response_headers(upstream),
        background=BackgroundTask(finish),
    )

"""Every other /v1/* request: forwarded unchanged, bodies streamed both ways, logged with any usage."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response

from gateway import headers as h
from gateway.api import tracked
from gateway.api.chat import RelayResponse
from gateway.api.common import LimitedBody, Services, check_header_values, services
from gateway.capture import BodyCapture
from gateway.errors import GatewayError
from gateway.identity import bearer_token
from gateway.ownership import Access, classify
from gateway.pricing import parse_usage, usage_columns
from gateway.proxy_paths import forwarded_path
from gateway.store.usage import record_attempt
from gateway.upstream import response_headers, translate_errors

log = logging.getLogger("gateway")
PROXY_ENDPOINT = "/v1/{path:path}"  # the upstream-latency label of proxied calls


@dataclass
class _Call:
    """One pass-through call as the request log will see it."""

    values: dict[str, Any]
    started: float
    sent: BodyCapture | None
    received: BodyCapture | None = None
    recorded: bool = True


def _text(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) and value else None


def _attempt(svc: Services, call: _Call, status: int, error: str | None) -> dict[str, Any]:
    """The request-log row: usage and the returned model from a JSON answer, when it has them."""
    asked = call.sent.fields("model", "stream") if call.sent else {"model": None, "stream": None}
    answered = call.received.fields("model", "usage") if call.received else {"model": None, "usage": None}
    usage = parse_usage(answered)
    model = answered["model"] if isinstance(answered["model"], str) else asked["model"]
    cost = svc.pricer.cost(model if isinstance(model, str) and model else None, usage, 0)
    return {
        **call.values,
        "model": _text(asked["model"]),
        "response_model": _text(answered["model"]),
        "stream": asked["stream"] is True,
        "status": status,
        "error": error,
        "latency_ms": (time.monotonic() - call.started) * 1000,
        **usage_columns(usage, cost),
        "history_tokens": 0,  # the gateway adds no history to a pass-through call
        "history_messages": 0,
    }


async def _log(svc: Services, call: _Call, status: int, error: str | None) -> None:
    svc.metrics.observe_upstream(PROXY_ENDPOINT, time.monotonic() - call.started)
    if not call.recorded:
        return
    with anyio.CancelScope(shield=True):
        try:
            async with svc.db.transaction() as session:
                await record_attempt(session, _attempt(svc, call, status, error))
        except GatewayError as exc:  # the answer is already on its way: the row is what is lost
            log.warning("could not record a pass-through call: %s", exc)


async def _copying(chunks: AsyncIterator[bytes], capture: BodyCapture) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        capture.feed(chunk)
        yield chunk


async def _body(
    svc: Services, call: _Call, upstream: httpx.Response, sniffer: tracked.StreamIds | None = None
) -> AsyncIterator[bytes]:
    """Stream the upstream body to the client; log the call however it ends (disconnect: 499).

    With a `sniffer`, the id of the object a streamed creation makes is recorded before the client sees it.
    """
    status: int = 499
    error: str | None = "client disconnected"
    try:
        with translate_errors():
            async for chunk in upstream.aiter_raw():
                if call.received is not None:
                    call.received.feed(chunk)
                if sniffer is not None:
                    await sniffer.feed(chunk)
                yield chunk
        status, error = upstream.status_code, None
    except GatewayError as exc:  # the status line is sent already: the body just ends
        status, error = upstream.status_code, str(exc)
    finally:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(httpx.HTTPError, OSError):
                await upstream.aclose()
            await _log(svc, call, status, error)


def _raw_path(request: Request) -> bytes:
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw
    return quote(request.scope["path"], safe="/:@!$&'()*+,;=~").encode()  # a server without raw_path


async def proxy(request: Request) -> Response:
    """Forward the request (raw path, query, headers, body) and stream the answer back.

    With the upstream key held by the gateway, the path must be stateless, tracked (objects per caller,
    see ownership.py) or allowed by GATEWAY_PROXY_ALLOW.
    """
    svc = services(request)
    caller = await svc.auth.identify(bearer_token(request.headers.get("authorization")))
    below = forwarded_path(_raw_path(request), request.scope.get("query_string", b""))
    check_header_values(request)
    limited = LimitedBody(request, svc.settings.max_body_bytes)
    await svc.auth.check_budget(caller)
    access = await _access(svc, request, caller.identity)
    tracking = access is not None and access.action != "plain"
    url = svc.upstream.raw_url(below)
    headers = svc.upstream.forward_headers(dict(request.headers), caller.token, identity_encoding=tracking)
    has_body = (
        request.method not in ("GET", "HEAD", "OPTIONS", "DELETE") or "content-length" in request.headers
    )
    sent = BodyCapture.for_headers(request.headers) if has_body else None
    content: bytes | AsyncIterator[bytes] | None = None
    if tracking and has_body and sent is not None:  # a JSON body: it may name objects, which must be ours
        content = await tracked.checked_body(svc, request, caller.identity)
        sent.feed(content)
    elif has_body:
        content = _copying(limited.chunks(), sent) if sent is not None else limited.chunks()
    values: dict[str, Any] = {
        "owner": caller.identity,
        "conversation_id": None,
        "request_id": getattr(request.state, "request_id", secrets.token_hex(8)),
        "upstream_request_id": None,
        "endpoint": request.scope["path"][:200],
        "created_at": time.time(),
    }
    call = _Call(values, time.monotonic(), sent)
    try:
        upstream = await svc.upstream.open(request.method, url, headers, content)
    except GatewayError as exc:
        if limited.exceeded:  # refused for its size, not an upstream failure: nothing is recorded
            raise limited.error() from None
        await _log(svc, call, exc.status_code, str(exc))
        raise
    if limited.exceeded:
        await upstream.aclose()
        raise limited.error()
    # In pass-through mode a token the upstream rejects is no caller at all: record nothing for it.
    call.recorded = svc.settings.upstream_api_key is not None or upstream.status_code not in (401, 403)
    values["upstream_request_id"] = (upstream.headers.get(h.REQUEST_ID) or "")[:200] or None
    call.received = BodyCapture.for_headers(upstream.headers)
    if access is not None and tracking and request.method != "HEAD" and 200 <= upstream.status_code < 300:
        return await _tracked_answer(
            svc, call, caller.identity, access, request.method, url, headers, upstream
        )
    return RelayResponse(
        _body(svc, call, upstream), status_code=upstream.status_code, headers=response_headers(upstream)
    )


async def _access(svc: Services, request: Request, owner: str) -> Access | None:
    """Gateway-key mode: how this path is handled (403 when a key may not use it, 404 for another's id)."""
    if svc.settings.upstream_api_key is None:
        return None
    access = classify(request.method, request.scope["path"].removeprefix("/v1/"), svc.settings.proxy_allow)
    if access.object_id is not None:
        await tracked.require_owned(svc, owner, [("id", access.object_id)])
    return access


async def _tracked_answer(
    svc: Services,
    call: _Call,
    owner: str,
    access: Access,
    method: str,
    url: httpx.URL,
    headers: dict[str, str],
    upstream: httpx.Response,
) -> Response:
    """A successful answer to a tracked call: new ids recorded, lists filtered, before the client gets it."""
    try:
        answer = await tracked.answer(svc, owner, access, method, url, headers, upstream)
    except GatewayError as exc:
        await _log(svc, call, exc.status_code, str(exc))
        raise
    if answer is not None:
        await _log_buffered(svc, call, upstream.status_code, answer.body)
        return Response(answer.body, status_code=upstream.status_code, headers=answer.headers)
    sniffer = None
    if _is_event_stream(upstream) and access.action == "create":
        sniffer = tracked.StreamIds(svc, owner, access.kind)
    return RelayResponse(
        _body(svc, call, upstream, sniffer),
        status_code=upstream.status_code,
        headers=response_headers(upstream),
    )


def _is_event_stream(upstream: httpx.Response) -> bool:
    content_type: str = upstream.headers.get("content-type", "")
    return content_type.lower().startswith("text/event-stream")


async def _log_buffered(svc: Services, call: _Call, status: int, body: bytes) -> None:
    if call.received is not None:
        call.received.feed(body)
    await _log(svc, call, status, None)

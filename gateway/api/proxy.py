"""Every other /v1/* request: forwarded unchanged, bodies streamed both ways, logged with any usage.

In gateway-key mode a JSON request body is read first (within the body limit) so that the call can be
charged: it reserves its estimated cost against the key's budget, a streamed `/v1/completions` call asks
for usage (the usage chunk is hidden from a client that did not ask for it), and a stream that ends
without usage (abandoned, cut, or never reported) is charged an estimate. The path must then also be
stateless, tracked (objects per caller, see ownership.py) or allowed by GATEWAY_PROXY_ALLOW.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import httpx
from starlette.requests import Request
from starlette.responses import Response

from gateway import headers as h
from gateway.api import tracked
from gateway.api.chat import RelayResponse
from gateway.api.common import LimitedBody, Services, check_header_values, services
from gateway.attempts import AttemptRecord, attempt_record
from gateway.capture import READABLE_ENCODINGS, BodyCapture
from gateway.chat_request import check_depth, nesting_error
from gateway.errors import DatabaseUnavailable, GatewayError, ServerError, UnsupportedEncoding, UpstreamError
from gateway.estimates import body_prompt_tokens, completion_allowance, estimated_usage
from gateway.exchange import client_wants_usage
from gateway.identity import bearer_token
from gateway.offload import THREAD_THRESHOLD, run_sized
from gateway.ownership import Access, classify, references
from gateway.pricing import Usage, parse_usage
from gateway.proxy_paths import forwarded_path
from gateway.sse import SseSplitter, UsageMeter, is_usage_only
from gateway.store.spend import release_budget
from gateway.store.usage import insert_attempt
from gateway.tokens import needs_loading
from gateway.upstream import response_headers, translate_errors

log = logging.getLogger("gateway")
PROXY_ENDPOINT = "/v1/{path:path}"  # the upstream-latency label of proxied calls
USAGE_OPTION_PATHS = ("/completions",)  # pass-through endpoints that take stream_options.include_usage


@dataclass
class _Call:
    """One pass-through call as the request log will see it."""

    owner: str
    request_id: str
    endpoint: str
    created_at: float
    started: float
    sent: BodyCapture | None
    upstream_request_id: str | None = None
    received: BodyCapture | None = None
    recorded: bool = True
    body: dict[str, Any] | None = None  # the JSON request, when the gateway read it (gateway-key mode)
    meter: UsageMeter | None = None  # the stream's reports, for an event-stream answer
    usage_added: bool = False
    reservation: int | None = None
    finished: bool = False  # the upstream's answer arrived whole
    size: int = 0  # of the request body the gateway read


def _counting_size(call: _Call) -> int:
    """The size that decides whether counting the call's tokens goes to a worker thread (see offload.py)."""
    model = call.body.get("model") if call.body is not None else None
    if isinstance(model, str) and needs_loading(model):
        return THREAD_THRESHOLD + 1  # the count would first build the model's encoding
    return call.size


def _text(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) and value else None


def _asked(call: _Call) -> dict[str, Any]:
    if call.body is not None:
        return {"model": call.body.get("model"), "stream": call.body.get("stream")}
    return call.sent.fields("model", "stream") if call.sent else {"model": None, "stream": None}


def _answered(call: _Call) -> dict[str, Any]:
    if call.meter is not None:
        return call.meter.fields()
    return call.received.fields("model", "usage") if call.received else {"model": None, "usage": None}


def _estimate(call: _Call, model: str | None) -> Usage | None:
    """An estimate for a stream without usage, or an abandoned call, of a request the gateway read."""
    if call.body is None or (call.finished and call.meter is None):
        return None  # a whole answer without usage is a free call (models, moderations, ...)
    prompt = body_prompt_tokens(call.body, model)
    return estimated_usage(prompt, "".join(call.meter.text) if call.meter else "", model)


def _attempt(svc: Services, call: _Call, status: int, error: str | None) -> AttemptRecord:
    """The request-log record: usage and the returned model from a JSON answer, when it has them."""
    asked, answered = _asked(call), _answered(call)
    usage = parse_usage(answered)
    model = answered["model"] if isinstance(answered["model"], str) else asked["model"]
    model = model if isinstance(model, str) and model else None
    estimated = False
    if usage is None and answered["usage"] is None:  # none at all: an unreadable one is recorded as null
        usage = _estimate(call, model)
        estimated = usage is not None
    cost = svc.pricer.cost(model, usage, 0)
    return attempt_record(
        owner=call.owner,
        conversation_id=None,
        request_id=call.request_id,
        upstream_request_id=call.upstream_request_id,
        endpoint=call.endpoint,
        model=_text(asked["model"]),
        response_model=_text(answered["model"]),
        stream=asked["stream"] is True,
        status=status,
        error=error,
        latency_ms=(time.monotonic() - call.started) * 1000,
        created_at=call.created_at,
        usage=usage,
        cost=cost,
        history_tokens=0,  # the gateway adds no history to a pass-through call
        history_messages=0,
        estimated=estimated,
    )


async def _log(svc: Services, call: _Call, status: int, error: str | None) -> None:
    svc.metrics.observe_upstream(PROXY_ENDPOINT, time.monotonic() - call.started)
    if not call.recorded:
        return
    with anyio.CancelScope(shield=True):
        try:
            size = _counting_size(call)
            attempt = await run_sized(size, functools.partial(_attempt, svc, call, status, error))
            reservation, call.reservation = call.reservation, None

            def record(connection: Any) -> None:
                insert_attempt(connection, attempt)
                release_budget(connection, reservation)

            await svc.db.run(record)
        except DatabaseUnavailable as exc:  # the answer is already on its way: the row is what is lost
            log.warning("could not record a pass-through call: %s", exc)


async def _relay_events(call: _Call, meter: UsageMeter, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Forward an event stream, reading each event; drop a usage chunk the client did not ask for."""
    splitter = SseSplitter()
    async for chunk in chunks:
        kept = []
        for event in splitter.feed(chunk):
            payload = event.json()
            meter.observe(payload)
            if not (call.usage_added and is_usage_only(payload)):
                kept.append(event.raw)
        if not call.usage_added:
            yield chunk  # unchanged bytes: the events were only read
        elif kept:
            yield b"".join(kept)
    if call.usage_added and splitter.leftover():
        yield splitter.leftover()


async def _captured(call: _Call, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Forward a body, keeping a bounded copy (inflated in a worker thread when compressed)."""
    capture = call.received
    async for chunk in chunks:
        if capture is not None:
            if capture.compressed:
                await anyio.to_thread.run_sync(capture.feed, chunk)
            else:
                capture.feed(chunk)
        yield chunk


async def _sniffed(chunks: AsyncIterator[bytes], sniffer: tracked.StreamIds | None) -> AsyncIterator[bytes]:
    """The upstream's raw chunks, shown to the id sniffer of a streamed creation first."""
    async for chunk in chunks:
        if sniffer is not None:
            await sniffer.feed(chunk)
        yield chunk


async def _body(
    svc: Services, call: _Call, upstream: httpx.Response, sniffer: tracked.StreamIds | None = None
) -> AsyncIterator[bytes]:
    """Stream the upstream body to the client; log the call however it ends (disconnect: 499).

    With a `sniffer`, the id of the object a streamed creation makes is recorded before the client sees it.
    """
    status: int = 499
    error: str | None = "client disconnected"
    chunks = _sniffed(upstream.aiter_raw(), sniffer)
    relayed = _relay_events(call, call.meter, chunks) if call.meter else _captured(call, chunks)
    try:
        with translate_errors():
            async for chunk in relayed:
                yield chunk
        call.finished = True
        status, error = upstream.status_code, None
    except UpstreamError as exc:  # the status line is sent already: the body just ends
        status, error = upstream.status_code, str(exc)
    finally:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(httpx.HTTPError, OSError):
                await upstream.aclose()
            await _log(svc, call, status, error)


def _decode(text: bytes) -> Any:
    """The JSON body (None when it is not JSON); 400 when it nests too deep to be handled safely."""
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise nesting_error() from None
    except ValueError:
        return None
    check_depth(text, parsed)
    return parsed


def _is_json(request: Request) -> bool:
    return "json" in request.headers.get("content-type", "").lower()


async def _read_for_charging(
    svc: Services, request: Request, limited: LimitedBody, call: _Call, headers: dict[str, str]
) -> bytes:
    """Read a JSON body whole (gateway-key mode) to charge its call; the bytes to forward."""
    if limited.encoding not in READABLE_ENCODINGS:
        raise UnsupportedEncoding(
            f"The gateway cannot read a request body in Content-Encoding '{limited.encoding[:40]}', and "
            "must read it to charge the call to the key; send it uncompressed, or in gzip or deflate."
        )
    raw: list[bytes] = []
    decoded: list[bytes] = []
    limited.sink = decoded.append
    async for chunk in limited.chunks():
        raw.append(chunk)
    text = b"".join(decoded)
    call.size = len(text)
    parsed = await run_sized(len(text), functools.partial(_decode, text))
    if not isinstance(parsed, dict):
        return b"".join(raw)  # not a JSON object: the upstream judges it, uncharged beyond its usage
    call.body = parsed
    path = request.url.path.removeprefix("/v1")
    if parsed.get("stream") is True and path in USAGE_OPTION_PATHS and not client_wants_usage(parsed):
        call.usage_added = True
        headers.pop("content-encoding", None)
        options = dict(parsed.get("stream_options") or {}) | {"include_usage": True}
        body = parsed | {"stream_options": options}
        return await run_sized(len(text), lambda: json.dumps(body, ensure_ascii=False).encode())
    return b"".join(raw)


async def _content(
    svc: Services, request: Request, limited: LimitedBody, call: _Call, headers: dict[str, str]
) -> bytes | AsyncIterator[bytes]:
    """What to send upstream: in key mode a JSON body read whole, else the body streamed as it comes."""
    if svc.settings.upstream_api_key is not None and _is_json(request):
        return await _read_for_charging(svc, request, limited, call, headers)
    if _is_json(request) and limited.encoding in READABLE_ENCODINGS:
        call.sent = BodyCapture()
        limited.sink = call.sent.feed  # a compressed body is inflated in a worker thread, within the limit
    return limited.chunks()


async def _reserve(svc: Services, call: _Call, caller: Any) -> None:
    """Reserve the call's estimated cost against its key's budget (429 when it is spent)."""
    if caller.budget_pusd is None:
        return
    body = call.body or {}
    model = body.get("model") if isinstance(body.get("model"), str) else None
    prompt = await run_sized(_counting_size(call), functools.partial(body_prompt_tokens, body, model))
    usage = Usage(prompt, completion_allowance(body, svc.settings.budget_reserve_tokens))
    call.reservation = await svc.turns.budgets.reserve(
        caller.identity, caller.key_name, caller.budget_pusd, model, usage
    )


def _raw_path(request: Request) -> bytes:
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw
    return quote(request.scope["path"], safe="/:@!$&'()*+,;=~").encode()  # a server without raw_path


async def proxy(request: Request) -> Response:
    """Forward the request (raw path, query, headers, body) and stream the answer back.

    With the upstream key held by the gateway, the path must be stateless, tracked (objects per caller,
    see ownership.py) or allowed by GATEWAY_PROXY_ALLOW, and the call is charged to the key.
    """
    svc = services(request)
    caller = await svc.auth.identify(bearer_token(request.headers.get("authorization")))
    below = forwarded_path(_raw_path(request), request.scope.get("query_string", b""))
    check_header_values(request)
    limited = LimitedBody(request, svc.settings.max_body_bytes)
    await svc.auth.check_budget(caller)
    access = await _access(svc, request, caller.identity)
    tracking = access is not None and access.action != "plain"
    key_mode = svc.settings.upstream_api_key is not None
    url = svc.upstream.raw_url(below)
    # In key mode the gateway reads the answer to charge it (and to track objects): uncompressed.
    headers = svc.upstream.forward_headers(dict(request.headers), caller.token, identity_encoding=key_mode)
    has_body = (
        request.method not in ("GET", "HEAD", "OPTIONS", "DELETE") or "content-length" in request.headers
    )
    call = _Call(
        owner=caller.identity,
        request_id=getattr(request.state, "request_id", secrets.token_hex(8)),
        endpoint=request.scope["path"][:200],
        created_at=time.time(),
        started=time.monotonic(),
        sent=None,
    )
    content = await _content(svc, request, limited, call, headers) if has_body else None
    if tracking and call.body is not None:  # a JSON body may name objects, which must be the caller's
        await tracked.require_owned(svc, caller.identity, references(call.body))
    if key_mode:
        await _reserve(svc, call, caller)
    try:
        upstream = await svc.upstream.open(request.method, url, headers, content)
    except GatewayError as exc:  # broad: the body streams up here, so its own 400/413 surface here too
        if limited.exceeded:  # refused for its size, not an upstream failure: nothing is recorded
            await _release(svc, call)
            raise limited.error() from None
        await _log(svc, call, exc.status_code, str(exc))
        raise
    except BaseException:  # the client left while the upstream was working: charge the estimate
        await _log(svc, call, 499, "client disconnected")
        raise
    if limited.exceeded:
        await upstream.aclose()
        await _release(svc, call)
        raise limited.error()
    # In pass-through mode a token the upstream rejects is no caller at all: record nothing for it.
    call.recorded = key_mode or upstream.status_code not in (401, 403)
    call.upstream_request_id = (upstream.headers.get(h.REQUEST_ID) or "")[:200] or None
    if _is_event_stream(upstream):
        call.meter = UsageMeter()
    else:
        limit = svc.settings.max_response_bytes
        call.received = BodyCapture.for_headers(upstream.headers, decode_limit=limit)
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
    except ServerError as exc:  # the upstream or the database failed: the call is logged with it
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


async def _release(svc: Services, call: _Call) -> None:
    """Drop the call's reservation when it ends without reaching the upstream."""
    reservation, call.reservation = call.reservation, None
    if reservation is not None:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(DatabaseUnavailable):
                await svc.db.run(functools.partial(release_budget, reservation=reservation))

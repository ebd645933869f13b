"""POST /v1/chat/completions."""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway import headers as h
from gateway.api import tracked
from gateway.api.common import check_header_values, read_limited_body, services
from gateway.chat_request import (
    check_chat_body,
    check_idempotency_key,
    parse_json_object,
    parse_limit_header,
    parse_strategy_header,
)
from gateway.exchange import ChatCall, Reply
from gateway.history import Budget
from gateway.identity import bearer_token, validate_conversation_id
from gateway.offload import run_sized
from gateway.ownership import made_ids, message_file_ids


class RelayResponse(StreamingResponse):
    """A streaming response that stops (and so releases the conversation) as soon as the client leaves.

    `on_close` runs once sending is over, however it ended: it releases what the stream holds even when
    the body was never iterated (the client left first, or sending the status failed).
    """

    def __init__(
        self,
        content: AsyncIterator[bytes],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream the body while watching for the client's disconnect; always close the body iterator."""
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        except* OSError:  # the task group wraps what its tasks raise
            pass  # the client went away while we were sending
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    iterator = self.body_iterator
                    if isinstance(iterator, AsyncIterator) and hasattr(iterator, "aclose"):
                        await iterator.aclose()
                finally:
                    if self.on_close is not None:
                        await self.on_close()


def _parse(raw: bytes) -> dict[str, Any]:
    body = parse_json_object(raw)
    check_chat_body(body)
    return body


def retry_count(value: str | None) -> int:
    """The x-stainless-retry-count header: 0 when absent or not a small whole number."""
    text = (value or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        return 0
    return int(text)


async def chat_completions(request: Request) -> Response:
    """Prepend the stored history, forward, relay the reply, record the turn."""
    svc = services(request)
    # One dict of the headers (first value of each, as Starlette's `get`), instead of a scan per lookup.
    headers = dict(request.headers)
    caller = await svc.auth.identify(bearer_token(headers.get("authorization")))
    conversation_id = headers.get(h.CONVERSATION_ID)
    if conversation_id is not None:
        validate_conversation_id(conversation_id)
    budget = Budget(
        max_messages=parse_limit_header("X-Max-History-Messages", headers.get(h.MAX_HISTORY_MESSAGES)),
        max_tokens=parse_limit_header("X-Max-History-Tokens", headers.get(h.MAX_HISTORY_TOKENS)),
    )
    strategy = parse_strategy_header(headers.get(h.HISTORY_STRATEGY))
    raw = await read_limited_body(request, svc.settings.max_body_bytes)
    body = await run_sized(len(raw), functools.partial(_parse, raw))
    idempotency_key = check_idempotency_key(headers.get(h.IDEMPOTENCY_KEY))
    check_header_values(request)  # after the gateway's own headers, which have their own errors
    if svc.settings.upstream_api_key is not None:  # one upstream account: only the key's own files
        await tracked.require_owned(svc, caller.identity, message_file_ids(body["messages"]))
    await svc.auth.check_budget(caller)  # a spent key is refused before any work; turns reserve its share
    call = ChatCall(
        owner=caller.identity,
        token=caller.token,
        conversation_id=conversation_id,
        body=body,
        raw=raw,
        headers=headers,
        request_id=request.state.request_id if hasattr(request.state, "request_id") else secrets.token_hex(8),
        header_budget=budget,
        retry_count=retry_count(headers.get(h.RETRY_COUNT)),
        idempotency_key=idempotency_key,
        key_name=caller.key_name,
        budget_pusd=caller.budget_pusd,
        header_strategy=strategy,
    )
    reply = await svc.turns.chat(call)
    stored = svc.settings.upstream_api_key is not None and body.get("store") is True and reply.status == 200
    if isinstance(reply, Reply):
        if stored:  # a stored completion belongs to this key (GET /v1/chat/completions/{id} and the list)
            await tracked.record(
                svc, caller.identity, "chat.completion", made_ids(_json(reply.body), include_own_id=True)
            )
        return Response(reply.body, status_code=reply.status, headers=reply.headers)
    events = reply.events
    if stored:
        events = _recording(events, tracked.StreamIds(svc, caller.identity, "chat.completion"))
    return RelayResponse(events, status_code=reply.status, headers=reply.headers, on_close=reply.close)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


async def _recording(events: AsyncIterator[bytes], ids: tracked.StreamIds) -> AsyncIterator[bytes]:
    """The stream's events, its completion id recorded before the client sees it."""
    try:
        async for event in events:
            await ids.feed(event)
            yield event
    finally:
        with anyio.CancelScope(shield=True):
            if hasattr(events, "aclose"):
                await events.aclose()

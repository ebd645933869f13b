"""The `POST /v1/chat/completions` route of the mock upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.mock_upstream.auth import check_auth, read_json, record_request
from gateway.mock_upstream.errors import MockConnectionReset
from gateway.mock_upstream.faults import (
    find_fault,
    raise_error_fault,
    slow_seconds,
    stall_until_disconnect,
)
from gateway.mock_upstream.objects import store_completion
from gateway.mock_upstream.plan import Reply, completion_json, plan_reply
from gateway.mock_upstream.stream import stream_events
from gateway.mock_upstream.validation import validate_chat_request

GARBAGE_BODY = b"this is not json{"


async def chat_completions(request: Request) -> Response:
    """Answer a chat completion like OpenAI would, or misbehave as a FAULT marker asks."""
    check_auth(request)
    body = await read_json(request)
    chat = validate_chat_request(body)
    record_request(request, body)
    fault = find_fault(chat.messages)
    if fault is not None:
        raise_error_fault(fault)
        if fault.name == "stall" or (fault.name == "stall-stream" and not chat.stream):
            await stall_until_disconnect(request.receive)
    reply = plan_reply(chat, fault)
    cache = request.app.state.prompt_cache
    if cache is not None and reply.usage is not None:
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        reply.usage["prompt_tokens_details"]["cached_tokens"] = cache.lookup(token, chat.model, chat.messages)
    if isinstance(body, dict) and body.get("store") is True and fault is None:
        store_completion(request, json.loads(completion_json(reply)), body)
    if chat.stream:
        return StreamingResponse(stream_events(reply, chat.include_usage), media_type="text/event-stream")
    delay = slow_seconds(fault)
    if delay:
        await asyncio.sleep(delay)
    return _completion_response(reply)


def _completion_response(reply: Reply) -> Response:
    """Return the non-stream response of `reply`, applying the body faults."""
    fault = reply.fault.name if reply.fault is not None else ""
    if fault == "garbage":
        return Response(GARBAGE_BODY, media_type="application/json")
    payload = completion_json(reply).encode()
    if fault in ("reset", "cut"):
        headers = {"content-length": str(len(payload))}
        return StreamingResponse(_broken_body(payload), headers=headers, media_type="application/json")
    return Response(payload, media_type="application/json")


async def _broken_body(payload: bytes) -> AsyncIterator[bytes]:
    """Send half of `payload`, then break the connection."""
    yield payload[: len(payload) // 2]
    await asyncio.sleep(0)
    raise MockConnectionReset("injected by FAULT:reset")

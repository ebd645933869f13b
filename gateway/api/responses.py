"""The Responses API: POST /v1/responses, GET/DELETE /v1/responses/{id}, GET .../input_items.

With GATEWAY_RESPONSES=translate (the default) the gateway serves them over the upstream's chat
completions and stores each response as a conversation turn; with `passthrough` every handler hands the
request to the pass-through proxy, as for any other path.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import headers as h
from gateway.api import proxy, tracked
from gateway.api.chat import RelayResponse, retry_count
from gateway.api.common import check_header_values, json_response, read_limited_body, services
from gateway.chat_request import (
    check_idempotency_key,
    parse_json_object,
    parse_limit_header,
    parse_strategy_header,
)
from gateway.conversation_fields import page_limit, page_order
from gateway.errors import InvalidRequest, NotFound
from gateway.history import Budget
from gateway.identity import bearer_token, validate_conversation_id
from gateway.offload import run_sized
from gateway.ownership import upstream_references
from gateway.responses.events import encode, replay_events
from gateway.responses.request import parse_request
from gateway.responses.service import ResponsesCall, request_hash
from gateway.store.responses import delete_response, get_response
from gateway.store.tables import StoredResponse

LIMIT_DEFAULT, LIMIT_MAX = 20, 100


def _passthrough(request: Request) -> bool:
    return services(request).settings.responses_mode == "passthrough"


async def create(request: Request) -> Response:
    """POST /v1/responses: one response, a turn of its conversation (or stateless with store: false)."""
    if _passthrough(request):
        return await proxy.proxy(request)
    svc = services(request)
    caller = await svc.auth.identify(bearer_token(request.headers.get("authorization")))
    budget = Budget(
        max_messages=parse_limit_header(
            "X-Max-History-Messages", request.headers.get(h.MAX_HISTORY_MESSAGES)
        ),
        max_tokens=parse_limit_header("X-Max-History-Tokens", request.headers.get(h.MAX_HISTORY_TOKENS)),
    )
    strategy = parse_strategy_header(request.headers.get(h.HISTORY_STRATEGY))
    raw = await read_limited_body(request, svc.settings.max_body_bytes)
    body = await run_sized(len(raw), functools.partial(parse_json_object, raw))  # a big body: off the loop
    parsed = parse_request(body)
    header_conversation = request.headers.get(h.CONVERSATION_ID)
    if (
        header_conversation is not None
        and parsed.conversation_id is None
        and parsed.previous_response_id is None
    ):
        # The chat API's way of naming a conversation works here too (the body's fields come first).
        parsed = dataclasses.replace(parsed, conversation_id=validate_conversation_id(header_conversation))
    idempotency_key = check_idempotency_key(request.headers.get(h.IDEMPOTENCY_KEY))
    check_header_values(request)  # forwarded upstream: printable ASCII only (400, never a 500)
    if svc.settings.upstream_api_key is not None:  # one upstream account: only the key's own files
        await tracked.require_owned(svc, caller.identity, upstream_references(body))
    await svc.auth.check_budget(caller)
    call = ResponsesCall(
        owner=caller.identity,
        token=caller.token,
        request=parsed,
        request_hash=request_hash(body),
        headers={k: v for k, v in request.headers.items() if k.lower() != h.CONVERSATION_ID},
        request_id=getattr(request.state, "request_id", None) or secrets.token_hex(8),
        header_budget=budget,
        header_strategy=strategy,
        retry_count=retry_count(request.headers.get(h.RETRY_COUNT)),
        idempotency_key=idempotency_key,
        key_name=caller.key_name,
        budget_pusd=caller.budget_pusd,
    )
    outcome = await svc.responses.create(call)
    if outcome.events is None:
        return Response(outcome.body, status_code=outcome.status, headers=outcome.headers)
    return RelayResponse(
        outcome.events, status_code=outcome.status, headers=outcome.headers, on_close=outcome.close
    )


async def _stored(request: Request) -> StoredResponse:
    svc = services(request)
    caller = await svc.auth.identify(bearer_token(request.headers.get("authorization")))
    response_id: str = request.path_params["response_id"]
    found = None
    if len(response_id) <= 64:
        found = await svc.db.run(
            functools.partial(get_response, owner=caller.identity, response_id=response_id)
        )
    if found is None:
        raise NotFound(f"Response with id '{response_id[:64]}' not found.", param="response_id")
    return found


async def retrieve(request: Request) -> Response:
    """GET /v1/responses/{id}: the stored response (`?stream=true`: its events again)."""
    if _passthrough(request):
        return await proxy.proxy(request)
    stored = await _stored(request)
    if request.query_params.get("stream", "").lower() != "true":
        return Response(stored.body, media_type="application/json")
    events = b"".join(encode(event) for event in replay_events(json.loads(stored.body)))
    return Response(
        events, headers={"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
    )


async def delete(request: Request) -> Response:
    """DELETE /v1/responses/{id}: forget the response (its turn stays in its conversation)."""
    if _passthrough(request):
        return await proxy.proxy(request)
    stored = await _stored(request)
    await services(request).db.run(functools.partial(delete_response, response=stored))
    return json_response({"id": stored.id, "object": "response.deleted", "deleted": True})


async def cancel(request: Request) -> Response:
    """POST /v1/responses/{id}/cancel: only background responses can be cancelled, and there are none here."""
    if _passthrough(request):
        return await proxy.proxy(request)
    stored = await _stored(request)
    raise InvalidRequest(
        f"Response '{stored.id}' is not a background response: only background responses can be cancelled.",
        param="response_id",
        code="invalid_value",
    )


def _after(items: list[dict[str, Any]], after: str | None) -> list[dict[str, Any]]:
    if after is None:
        return items
    ids = [item.get("id") for item in items]
    if after not in ids:
        raise InvalidRequest(
            f"Invalid 'after': {after[:64]!r} is not an input item of this response.",
            param="after",
            code="invalid_value",
        )
    return items[ids.index(after) + 1 :]


async def input_items(request: Request) -> Response:
    """GET /v1/responses/{id}/input_items: the items the response was given, paged like OpenAI's."""
    if _passthrough(request):
        return await proxy.proxy(request)
    query = request.query_params
    limit = page_limit(query.get("limit"), default=LIMIT_DEFAULT, maximum=LIMIT_MAX)
    descending = page_order(query.get("order"), default="desc") == "desc"
    stored = await _stored(request)
    items: list[dict[str, Any]] = json.loads(stored.input_items)
    if descending:
        items.reverse()
    rest = _after(items, query.get("after"))
    page = rest[:limit]
    return json_response(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(rest) > limit,
        }
    )


ROUTES = [
    Route("/v1/responses", create, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", input_items, methods=["GET"]),
    Route("/v1/responses/{response_id}/cancel", cancel, methods=["POST"]),
]

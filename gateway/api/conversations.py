"""The conversations API, in the shapes of OpenAI's Conversations API plus the gateway's own fields.

Every route is scoped to the caller: another caller's conversation is a 404, like an unknown one.
Writes (update, delete, create) hold the conversation's lock, so they never interleave with a turn.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.common import (
    Services,
    exact_json_response,
    json_response,
    path_conversation_id,
    read_limited_body,
    services,
)
from gateway.api.usage import conversation_usage_object
from gateway.auth import Caller
from gateway.chat_request import parse_json_object
from gateway.conversation_fields import (
    CREATE_FIELDS,
    UPDATE_FIELDS,
    check_new_id,
    conversation_columns,
    page_limit,
    page_order,
)
from gateway.errors import ConversationExists, InvalidRequest, MethodNotAllowed, NotFound
from gateway.identity import CONVERSATION_ID_PATTERN, bearer_token
from gateway.items import Item, item_key, item_position, message_items
from gateway.offload import run_sized
from gateway.reports import Totals, usage_object
from gateway.store.conversations import (
    SummaryState,
    check_conversation_room,
    create_conversation,
    delete_conversation,
    get_conversation,
    list_conversations,
    list_messages,
    stored_summary,
    summary_columns,
    update_conversation,
)
from gateway.store.database import Database
from gateway.store.tables import Conversation
from gateway.store.usage import conversation_usage
from gateway.tokens import count_message_tokens
from gateway.views import conversation_object
from gateway.window import summary_message

Handler = Callable[[Request], Awaitable[Response]]

LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 20, 100
MESSAGES_LIMIT_DEFAULT, MESSAGES_LIMIT_MAX = 100, 1000


def _summary_update(conversation: Conversation, text: str | None, now: float) -> dict[str, Any]:
    """The columns a PATCH of `summary` sets: new text keeps `through` (the window's start when there was
    no summary), null clears the summary so that the next cut under `summarize` folds in everything."""
    if text is None:
        return summary_columns(None)
    previous = stored_summary(conversation)
    through = previous.through if previous is not None else conversation.window_start
    tokens = count_message_tokens(summary_message(text), None)
    return summary_columns(SummaryState(text, tokens, through, now))


async def with_usage(db: Database, conversation: Conversation) -> dict[str, Any]:
    """The conversation object with its `usage` (Decimal costs: render with render_json)."""
    usage = await conversation_usage_object(db, conversation.owner, conversation.id)
    return {**conversation_object(conversation), "usage": usage}


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"No conversation found with id '{conversation_id}'.", param="conversation_id")


def _page(data: list[Any], has_more: bool, ids: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
        "has_more": has_more,
    }


async def _owner(svc: Services, request: Request) -> str:
    caller = await svc.auth.identify(bearer_token(request.headers.get("authorization")))
    return caller.identity


async def _caller(svc: Services, request: Request) -> Caller:
    return await svc.auth.identify(bearer_token(request.headers.get("authorization")))


async def _accepted(svc: Services, caller: Caller) -> str:
    """The identity of a caller about to write; in pass-through mode once the upstream accepted its token."""
    await svc.token_check.require(caller.identity, caller.token)
    return caller.identity


async def _body(svc: Services, request: Request) -> dict[str, Any]:
    raw = await read_limited_body(request, svc.settings.max_body_bytes)
    if not raw.strip():
        return {}
    return await run_sized(len(raw), functools.partial(parse_json_object, raw))


def _existing(connection: Connection, owner: str, conversation_id: str) -> Conversation:
    """A unit-of-work step: the caller's conversation (404 when the caller has no such id)."""
    conversation = get_conversation(connection, owner, conversation_id)
    if conversation is None:
        raise _not_found(conversation_id)
    return conversation


async def _find(svc: Services, owner: str, conversation_id: str) -> Conversation:
    return await svc.db.run(functools.partial(_existing, owner=owner, conversation_id=conversation_id))


def _after(connection: Connection, owner: str, after_id: str | None) -> Conversation | None:
    """The conversation a page starts after (None for the first page); 400 when it is not the caller's."""
    if after_id is None:
        return None
    valid = CONVERSATION_ID_PATTERN.fullmatch(after_id) is not None
    after = get_conversation(connection, owner, after_id) if valid else None
    if after is None:
        raise InvalidRequest(
            f"Invalid 'after': no conversation found with id '{after_id}'.",
            param="after",
            code="invalid_value",
        )
    return after


def list_page(
    connection: Connection, owner: str, after_id: str | None, limit: int
) -> tuple[list[Conversation], bool, dict[tuple[str, str], Mapping[str | None, Totals]]]:
    """A unit of work: up to `limit` of the caller's conversations after `after_id`, whether more follow,
    and the page's usage (one grouped query for the whole page)."""
    rows = list_conversations(connection, owner, limit=limit + 1, after=_after(connection, owner, after_id))
    page = rows[:limit]
    return page, len(rows) > limit, conversation_usage(connection, page)


async def list_all(request: Request) -> Response:
    """GET /v1/conversations: the caller's conversations, newest activity first."""
    svc = services(request)
    owner = await _owner(svc, request)
    limit = page_limit(request.query_params.get("limit"), default=LIST_LIMIT_DEFAULT, maximum=LIST_LIMIT_MAX)
    after_id = request.query_params.get("after")
    read = functools.partial(list_page, owner=owner, after_id=after_id, limit=limit)
    page, has_more, usage = await svc.db.run(read)
    data = [{**conversation_object(c), "usage": usage_object(usage.get((c.owner, c.id), {}))} for c in page]
    return exact_json_response(_page(data, has_more, [c.id for c in page]))


async def create(request: Request) -> Response:
    """POST /v1/conversations: an empty conversation (optional `id`, else `conv_...`) with its settings."""
    svc = services(request)
    caller = await _caller(svc, request)
    body = await _body(svc, request)
    columns = conversation_columns(body, CREATE_FIELDS)
    if body.get("items"):
        raise InvalidRequest(
            "Creating a conversation with 'items' is not supported: send the first turn to "
            "/v1/chat/completions with the X-Conversation-Id header.",
            param="items",
            code="unsupported_parameter",
        )
    conversation_id = check_new_id(body["id"]) if "id" in body else f"conv_{secrets.token_hex(24)}"
    owner = await _accepted(svc, caller)
    limit = svc.settings.max_conversations_per_caller

    def unit(connection: Connection) -> Conversation:
        if get_conversation(connection, owner, conversation_id) is not None:
            raise ConversationExists(
                f"A conversation with id '{conversation_id}' already exists.", param="id"
            )
        check_conversation_room(connection, owner, limit)
        return create_conversation(connection, owner, conversation_id, columns, time.time())

    async with svc.db.locks.hold(owner, conversation_id, svc.settings.lock_timeout):
        conversation = await svc.db.run(unit)
    return exact_json_response(await with_usage(svc.db, conversation))


async def retrieve(request: Request) -> Response:
    """GET /v1/conversations/{id}."""
    svc = services(request)
    conversation = await _find(svc, await _owner(svc, request), path_conversation_id(request))
    return exact_json_response(await with_usage(svc.db, conversation))


async def update(request: Request) -> Response:
    """POST or PATCH /v1/conversations/{id}: change metadata, system prompt or settings (never creates)."""
    svc = services(request)
    caller = await _caller(svc, request)
    conversation_id = path_conversation_id(request)
    columns = conversation_columns(await _body(svc, request), UPDATE_FIELDS)
    owner = await _accepted(svc, caller)

    def unit(connection: Connection) -> Conversation:
        conversation = _existing(connection, owner, conversation_id)
        now = time.time()
        if "summary_text" in columns:
            columns.update(_summary_update(conversation, columns.pop("summary_text"), now))
        update_conversation(connection, conversation, columns, now)
        return conversation

    async with svc.db.locks.hold(owner, conversation_id, svc.settings.lock_timeout):
        conversation = await svc.db.run(unit)
    return exact_json_response(await with_usage(svc.db, conversation))


async def delete(request: Request) -> Response:
    """DELETE /v1/conversations/{id}: remove its messages and settings; the request log keeps its usage."""
    svc = services(request)
    caller = await _caller(svc, request)
    conversation_id = path_conversation_id(request)
    owner = await _accepted(svc, caller)

    def unit(connection: Connection) -> None:
        delete_conversation(connection, _existing(connection, owner, conversation_id))

    async with svc.db.locks.hold(owner, conversation_id, svc.settings.lock_timeout):
        await svc.db.run(unit)
    return json_response({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


async def messages(request: Request) -> Response:
    """GET /v1/conversations/{id}/messages: stored messages oldest first, each with its created_at.

    The messages stay exactly as stored (plus `created_at`); the page's `first_id` / `last_id` name its
    first and last message (`msg_<seq>`, like the items), and `after=<last_id>` gives the next page.
    """
    svc = services(request)
    owner = await _owner(svc, request)
    query = request.query_params
    limit = page_limit(query.get("limit"), default=MESSAGES_LIMIT_DEFAULT, maximum=MESSAGES_LIMIT_MAX)
    after = _message_seq(query["after"]) if "after" in query else None
    conversation = await _find(svc, owner, path_conversation_id(request))
    rows = await svc.db.run(
        functools.partial(list_messages, conversation=conversation, limit=limit + 1, after=after)
    )
    page = rows[:limit]
    data = [{**message, "created_at": int(created)} for _, message, created in page]
    return json_response(_page(data, len(rows) > limit, [f"msg_{seq}" for seq, _, _ in page]))


def _message_seq(message_id: str) -> int:
    if not message_id.startswith("msg_") or not message_id[4:].isdigit() or len(message_id) > 14:
        raise InvalidRequest(
            f"Invalid 'after': {message_id!r} is not a message id of this conversation.",
            param="after",
            code="invalid_value",
        )
    return int(message_id[4:])


async def items(request: Request) -> Response:
    """GET /v1/conversations/{id}/items: the stored messages as Responses-API items (default newest first)."""
    svc = services(request)
    owner = await _owner(svc, request)
    query = request.query_params
    limit = page_limit(query.get("limit"), default=LIST_LIMIT_DEFAULT, maximum=LIST_LIMIT_MAX)
    descending = page_order(query.get("order"), default="desc") == "desc"
    after = item_position(query["after"]) if "after" in query else None
    conversation = await _find(svc, owner, path_conversation_id(request))
    # Every message makes at least one item, so limit + 1 messages past the cursor's own message
    # always give limit + 1 items: enough to fill the page and to know whether there is more.
    start = None
    if after is not None:
        start = after[0] + 1 if descending else after[0] - 1
    read = functools.partial(
        list_messages, conversation=conversation, limit=limit + 2, after=start, descending=descending
    )
    rows = await svc.db.run(read)
    found: list[Item] = []
    for seq, message, _ in rows:
        made = message_items(seq, message)
        found.extend(reversed(made) if descending else made)
    if after is not None:
        found = [i for i in found if (item_key(i) < after if descending else item_key(i) > after)]
    page = found[:limit]
    return json_response(_page(page, len(found) > limit, [item["id"] for item in page]))


async def item(request: Request) -> Response:
    """GET /v1/conversations/{id}/items/{item_id}: one item (SDK: `conversations.items.retrieve`)."""
    svc = services(request)
    owner = await _owner(svc, request)
    item_id = request.path_params["item_id"]
    conversation = await _find(svc, owner, path_conversation_id(request))
    missing = NotFound(f"No item found with id '{item_id}'.", param="item_id")
    try:
        seq, _ = item_position(item_id)
    except InvalidRequest:
        raise missing from None
    rows = await svc.db.run(
        functools.partial(list_messages, conversation=conversation, limit=1, after=seq - 1)
    )
    found = [i for s, message, _ in rows if s == seq for i in message_items(s, message) if i["id"] == item_id]
    if not found:
        raise missing
    return json_response(found[0])


def _methods(**handlers: Handler) -> Handler:
    """One endpoint per path that dispatches on the method, so other methods get a 405 (never the proxy)."""

    async def dispatch(request: Request) -> Response:
        method = "get" if request.method == "HEAD" else request.method.lower()
        handler = handlers.get(method)
        if handler is None:
            raise MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}")
        return await handler(request)

    return dispatch


async def unknown(request: Request) -> Response:
    """Any other path under /v1/conversations: a 404 from the gateway rather than a call upstream."""
    raise NotFound(f"Unknown path: {request.method} {request.url.path}")


ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

ROUTES = [
    Route("/v1/conversations", _methods(get=list_all, post=create), methods=ALL_METHODS),
    Route(
        "/v1/conversations/{conversation_id}",
        _methods(get=retrieve, post=update, patch=update, delete=delete),
        methods=ALL_METHODS,
    ),
    Route("/v1/conversations/{conversation_id}/items", _methods(get=items), methods=ALL_METHODS),
    Route("/v1/conversations/{conversation_id}/items/{item_id}", _methods(get=item), methods=ALL_METHODS),
    Route("/v1/conversations/{conversation_id}/messages", _methods(get=messages), methods=ALL_METHODS),
    Route("/v1/conversations/{rest:path}", unknown, methods=ALL_METHODS),
]

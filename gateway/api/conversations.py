"""The conversations API (read side of the core): one conversation and its stored messages."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import json_response, services
from gateway.api.usage import conversation_usage_object
from gateway.errors import NotFound
from gateway.history import system_prompt_text
from gateway.identity import bearer_token
from gateway.reports import render_json
from gateway.store.conversations import get_conversation, list_messages
from gateway.store.tables import Conversation


def conversation_object(conversation: Conversation) -> dict[str, Any]:
    """The JSON shape of a conversation."""
    system = json.loads(conversation.system_messages) if conversation.system_messages else None
    return {
        "id": conversation.id,
        "object": "conversation",
        "created_at": int(conversation.created_at),
        "updated_at": int(conversation.updated_at),
        "system_prompt": system_prompt_text(system),
        "message_count": conversation.message_count,
    }


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"No conversation found with id '{conversation_id}'.", param="conversation_id")


async def _load(request: Request) -> tuple[Conversation, Any]:
    svc = services(request)
    caller = await svc.auth.identify(bearer_token(request.headers.get("authorization")))
    conversation_id = request.path_params["conversation_id"]
    async with svc.db.transaction() as session:
        conversation = await get_conversation(session, caller.identity, conversation_id)
        if conversation is None:
            raise _not_found(conversation_id)
        return conversation, session


async def retrieve(request: Request) -> Response:
    """GET /v1/conversations/{id}."""
    conversation, _ = await _load(request)
    usage = await conversation_usage_object(services(request).db, conversation.owner, conversation.id)
    body = render_json({**conversation_object(conversation), "usage": usage})  # exact decimal costs
    return Response(body, media_type="application/json")


async def messages(request: Request) -> Response:
    """GET /v1/conversations/{id}/messages: stored messages oldest first, each with created_at."""
    svc = services(request)
    conversation, _ = await _load(request)
    async with svc.db.transaction() as session:
        rows = await list_messages(session, conversation)
    data = [{**message, "created_at": int(created)} for _, message, created in rows]
    return json_response({"object": "list", "data": data})

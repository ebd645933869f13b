"""Usage reports: GET /v1/usage and GET /v1/conversations/{id}/usage, scoped to the caller."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.admin import require_admin
from gateway.api.common import path_conversation_id, services
from gateway.errors import InvalidRequest, NotFound
from gateway.identity import bearer_token
from gateway.reports import Group, Report, UsageQuery, parse_report_params, render, usage_object
from gateway.store.conversations import get_conversation
from gateway.store.database import Database
from gateway.store.usage import usage_groups

_MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


async def conversation_usage_object(db: Database, owner: str, conversation_id: str) -> dict[str, Any]:
    """The usage object of the caller's current conversation with this id (earlier, deleted ones excluded)."""
    query = UsageQuery(owner=owner, conversation_id=conversation_id, current_only=True)
    groups = await db.run(functools.partial(usage_groups, query=query))
    return usage_object(Report(groups).by_model)


def _report_response(report: Report, fmt: str) -> Response:
    return Response(render(report, fmt), media_type=_MEDIA_TYPES[fmt])


async def _report_owner(request: Request) -> str | None:
    """The caller's identity; None (every caller) for `scope=all`, which needs the admin key."""
    scope = request.query_params.get("scope", "caller")
    if scope not in ("caller", "all"):
        message = f"Invalid 'scope': expected one of caller, all, got {scope!r}."
        raise InvalidRequest(message, param="scope", code="invalid_value")
    if scope == "all":
        await require_admin(request)
        return None
    svc = services(request)
    return (await svc.auth.identify(bearer_token(request.headers.get("authorization")))).identity


async def usage(request: Request) -> Response:
    """GET /v1/usage?group_by=&since=&until=&format=&scope=: the caller's (or, for the admin, all) usage."""
    svc = services(request)
    query, fmt = parse_report_params(request.query_params, await _report_owner(request))
    groups = await svc.db.run(functools.partial(usage_groups, query=query))
    return _report_response(Report(groups, group_by=query.group_by), fmt)


async def conversation_usage(request: Request) -> Response:
    """GET /v1/conversations/{id}/usage: the usage object plus `conversation_id`; 404 if not the caller's."""
    svc = services(request)
    caller = await svc.auth.identify(bearer_token(request.headers.get("authorization")))
    conversation_id = path_conversation_id(request)
    query = UsageQuery(owner=caller.identity, conversation_id=conversation_id, current_only=True)

    def unit(connection: Connection) -> list[Group]:
        if get_conversation(connection, caller.identity, conversation_id) is None:
            raise NotFound(f"No conversation found with id '{conversation_id}'.", param="conversation_id")
        return usage_groups(connection, query)

    groups = await svc.db.run(unit)
    return _report_response(Report(groups, conversation_id=conversation_id), "json")

"""Operational endpoints: health."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import json_response, services
from gateway.errors import error_body


async def healthz(request: Request) -> Response:
    """200 when the database answers, 503 otherwise."""
    if await services(request).db.ping():
        return json_response({"status": "ok"})
    body = error_body("The database is unavailable.", "service_unavailable", "database_unavailable")
    return json_response({"status": "unavailable", **body}, status=503)

"""Operational endpoints: health, metrics and the OpenAPI document."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import json_response, services
from gateway.errors import error_body
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import openapi_document


async def healthz(request: Request) -> Response:
    """200 when the database answers, 503 otherwise."""
    if await services(request).db.ping():
        return json_response({"status": "ok"})
    body = error_body("The database is unavailable.", "service_unavailable", "database_unavailable")
    return json_response({"status": "unavailable", **body}, status=503)


async def metrics(request: Request) -> Response:
    """The Prometheus text exposition (in multiprocess mode: summed over all workers)."""
    body = await run_in_threadpool(services(request).metrics.render)
    return Response(body, media_type=CONTENT_TYPE)


async def openapi(_request: Request) -> Response:
    """GET /openapi.json: the OpenAPI document of the gateway's own endpoints."""
    return json_response(openapi_document())

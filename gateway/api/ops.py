"""Operational endpoints: health, metrics and the OpenAPI document."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import json_response, services
from gateway.auth import same_secret
from gateway.errors import AuthenticationFailed, error_body
from gateway.identity import bearer_token
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import openapi_document


async def healthz(request: Request) -> Response:
    """200 when the database answers, 503 otherwise."""
    if await services(request).db.ping():
        return json_response({"status": "ok"})
    body = error_body("The database is unavailable.", "service_unavailable", "database_unavailable")
    return json_response({"status": "unavailable", **body}, status=503)


async def metrics(request: Request) -> Response:
    """The Prometheus text exposition (in multiprocess mode: summed over all workers).

    With GATEWAY_METRICS_KEY set, only `Authorization: Bearer <that key>` may read it (else 401).
    """
    svc = services(request)
    key = svc.settings.metrics_key
    if key is not None and not same_secret(bearer_token(request.headers.get("authorization")), key):
        raise AuthenticationFailed(
            "/metrics needs the metrics key (GATEWAY_METRICS_KEY) as the bearer token.",
        )
    body = await run_in_threadpool(svc.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)


async def openapi(_request: Request) -> Response:
    """GET /openapi.json: the OpenAPI document of the gateway's own endpoints."""
    return json_response(openapi_document())

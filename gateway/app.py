"""create_app(): routes, error handlers, and the lifespan that owns the HTTP client and the engine."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import headers as h
from gateway import heap, migrate
from gateway.access import AccessLog, route_paths
from gateway.api import admin, chat, conversations, ops, proxy, responses, usage
from gateway.api.common import Services, json_response
from gateway.auth import Authenticator
from gateway.config import Settings
from gateway.errors import (
    DatabaseUnavailable,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    error_body,
)
from gateway.metrics import Metrics
from gateway.pricing import Pricer
from gateway.proxy_paths import check_raw_path
from gateway.responses.service import ResponseService
from gateway.store.database import database_errors, open_database
from gateway.token_check import TokenCheck
from gateway.tokens import warm_up
from gateway.turns import TurnService
from gateway.ui.routes import ROUTES as UI_ROUTES
from gateway.upstream import UpstreamClient, create_http_client, load_aiohttp

log = logging.getLogger("gateway")

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

ROUTES = [
    Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
    *responses.ROUTES,
    Route("/v1/conversations/{conversation_id}/usage", usage.conversation_usage, methods=["GET"]),
    Route("/v1/usage", usage.usage, methods=["GET"]),
    Route("/admin/keys", admin.list_all, methods=["GET"]),
    Route("/admin/keys", admin.create, methods=["POST"]),
    Route("/admin/keys/{name}", admin.revoke, methods=["DELETE"]),
    *conversations.ROUTES,  # after the usage route: it ends with a catch-all for /v1/conversations/...
    Route("/healthz", ops.healthz, methods=["GET"]),
    Route("/metrics", ops.metrics, methods=["GET"]),
    Route("/openapi.json", ops.openapi, methods=["GET"]),
    *UI_ROUTES,
    Route("/v1/{path:path}", proxy.proxy, methods=ALL_METHODS),
]


async def _gateway_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return json_response(exc.to_body(), status=exc.status_code, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        raw_path = request.scope.get("raw_path")
        if isinstance(raw_path, bytes) and raw_path.startswith(b"/v1/"):
            try:  # a control character (%0A) keeps a path from matching any route: say why it is refused
                check_raw_path(raw_path)
            except InvalidRequest as invalid:
                return await _gateway_error(request, invalid)
        return await _gateway_error(request, NotFound(f"Unknown path: {request.method} {request.url.path}"))
    if exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}")
        return await _gateway_error(request, error)
    body = error_body(str(exc.detail), "invalid_request_error", None)
    return json_response(body, status=exc.status_code)


async def _database_error(request: Request, exc: Exception) -> Response:
    log.warning("database error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    error = DatabaseUnavailable(f"The database is unavailable: {type(exc).__name__}")
    return json_response(error.to_body(), status=error.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = error_body("The gateway had an internal error.", "server_error", "internal_error")
    # This handler runs outside the access middleware, so it adds the request id itself.
    request_id = getattr(request.state, "request_id", None)
    headers = {h.GATEWAY_REQUEST_ID: request_id} if request_id else None
    return json_response(body, status=500, headers=headers)


ERROR_HANDLERS: dict[Any, Any] = {
    GatewayError: _gateway_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}


def _warm_up(model: str, pricer: Pricer, *, transport: bool) -> None:
    """Import the upstream transport's library (`transport`), build the encoding of `model` and read the
    price snapshot (in a worker thread); a failure is logged, and raised again on first use."""
    try:
        if transport:
            load_aiohttp()
        pricer.warm_up()
        warm_up(model)
    except Exception:  # a broken installation must not take the running server down: the log says why
        log.exception("could not load aiohttp, build the tokenizer for %s or read the price snapshot", model)
    heap.release()  # the build's rank table (~25 MB of Python objects) is garbage now


def create_app(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """Build the gateway application; `transport` replaces the upstream network in tests."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        db = open_database(
            settings.database_url,
            lease_seconds=settings.lock_lease,
            pool_size=settings.db_pool_size,
            transaction_pooling=settings.db_transaction_pooling,
        )
        metrics = Metrics(settings.metrics_dir)
        try:
            await migrate.upgrade(db)
            pricer = Pricer.from_file(settings.prices_file)
            async with create_http_client(settings, transport) as http, anyio.create_task_group() as bg:
                # aiohttp is imported (~0.25 s), the most used encoding (gpt-4o and later) built, and the
                # snapshot of genai-prices' flat prices read, in the background, so that the server
                # answers (/healthz included) as soon as its port is bound; a request that needs one of
                # them before that waits for it in a worker thread (upstream_transport.AiohttpTransport,
                # tokens.py). tiktoken holds the GIL while it builds (~0.2 s): requests in flight then
                # may pause once. Others (cl100k_base for gpt-4 and gpt-3.5) are built on first use.
                warming = functools.partial(_warm_up, "gpt-4o", pricer, transport=transport is None)
                bg.start_soon(anyio.to_thread.run_sync, warming)
                upstream = UpstreamClient(http, settings)
                turns = TurnService(db, upstream, settings, pricer, metrics=metrics)
                services = Services(
                    settings=settings,
                    db=db,
                    upstream=upstream,
                    turns=turns,
                    pricer=pricer,
                    auth=Authenticator(db, settings),
                    metrics=metrics,
                    token_check=TokenCheck(upstream, settings.token_check_seconds),
                    responses=ResponseService(db, turns, settings),
                )
                heap.release()  # collects, and returns what start-up freed (migrations) to the system
                heap.freeze()  # everything loaded so far lives as long as the process
                try:
                    yield {"services": services}
                finally:
                    heap.unfreeze()
        finally:
            try:
                await db.close()
            finally:
                metrics.close()

    middleware = [Middleware(AccessLog, routes=route_paths(ROUTES))]
    # The database's own errors (asyncpg's only on Postgres: a server on SQLite never imports asyncpg).
    handlers = {**dict.fromkeys(database_errors(settings.database_url), _database_error), **ERROR_HANDLERS}
    return Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=handlers, middleware=middleware)

"""The mock upstream's Starlette app and its uvicorn runner."""

from __future__ import annotations

import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.mock_upstream.auth import new_request_log
from gateway.mock_upstream.cache import PromptCache
from gateway.mock_upstream.chat import chat_completions
from gateway.mock_upstream.errors import MockAPIError, handle_http_error, handle_mock_error, json_response
from gateway.mock_upstream.faults import quiet_injected_resets
from gateway.mock_upstream.objects import new_object_store, object_routes
from gateway.mock_upstream.resources import create_embeddings, get_model, list_models


class RequestIdMiddleware:
    """Adds `x-request-id: req_<uuid hex>` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap `send` so the response start carries the request id header."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"x-request-id", b"req_" + uuid.uuid4().hex.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


async def list_requests(request: Request) -> Response:
    """`GET /mock/requests`: the accepted chat completion requests, oldest first."""
    return json_response({"data": list(request.app.state.mock_requests)})


async def clear_requests(request: Request) -> Response:
    """`DELETE /mock/requests`: forget the recorded requests."""
    request.app.state.mock_requests.clear()
    return json_response({"deleted": True})


def create_mock_app(*, prompt_cache: PromptCache | None = None) -> Starlette:
    """Build a fresh mock upstream app with its own empty request log (and, if given, a prompt cache)."""
    quiet_injected_resets()
    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/v1/embeddings", create_embeddings, methods=["POST"]),
        *object_routes(),
        Route("/mock/requests", list_requests, methods=["GET"]),
        Route("/mock/requests", clear_requests, methods=["DELETE"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={MockAPIError: handle_mock_error, HTTPException: handle_http_error},
    )
    app.state.mock_requests = new_request_log()
    app.state.mock_objects = new_object_store()
    app.state.prompt_cache = prompt_cache
    return app


def run_mock(host: str = "127.0.0.1", port: int = 9000, *, prompt_cache: bool = False) -> None:
    """Serve the mock upstream with uvicorn until interrupted (`prompt_cache`: report real cache hits)."""
    uvicorn.run(
        create_mock_app(prompt_cache=PromptCache() if prompt_cache else None),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )

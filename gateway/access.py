"""The access middleware: a request id for every request, one access-log line, the request metrics.

A pure ASGI middleware (BaseHTTPMiddleware would buffer streams and break disconnect handling): it only
watches the messages that pass, adds `X-Gateway-Request-Id` to the response start, and logs when the body
ends (for a stream: after its last event), or when the exchange stops early.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import headers as h
from gateway.metrics import Metrics

log = logging.getLogger("gateway.access")

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED = "unmatched"
_REQUEST_ID = h.GATEWAY_REQUEST_ID.encode()
_UPSTREAM_ID = h.REQUEST_ID.encode()
_CONVERSATION = h.CONVERSATION_ID.encode()
_EVENT_STREAM = b"text/event-stream"


def route_paths(routes: Iterable[BaseRoute]) -> dict[Any, str]:
    """Map each route's endpoint to its path template: the `route` label of the request metrics."""
    paths: dict[Any, str] = {}
    for route in routes:
        if isinstance(route, Route):
            paths.setdefault(route.endpoint, route.path)
    return paths


def new_request_id() -> str:
    """A fresh request id (24 hex characters)."""
    return secrets.token_hex(12)


class AccessLog:
    """Gives each HTTP request an id (`request.state.request_id`), logs it and counts it in the metrics."""

    def __init__(self, app: ASGIApp, routes: Mapping[Any, str]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, watching its response messages."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, send, self.routes)
        try:
            await self.app(scope, receive, exchange.send)
        finally:
            if not exchange.done:
                exchange.finish(complete=False)


class _Exchange:
    """One request and its response, as the middleware sees them."""

    __slots__ = (
        "_send", "done", "first_chunk", "metrics", "request_id", "routes", "scope", "started", "status",
        "stream", "upstream_request_id",
    )  # fmt: skip

    def __init__(self, scope: Scope, send: Send, routes: Mapping[Any, str]) -> None:
        self.scope = scope
        self._send = send
        self.routes = routes
        self.started = time.perf_counter()
        self.request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = self.request_id
        self.metrics: Metrics | None = getattr(state.get("services"), "metrics", None)
        self.status: int | None = None
        self.stream = False
        self.first_chunk = True
        self.upstream_request_id: str | None = None
        self.done = False

    async def send(self, message: Message) -> None:
        """Forward `message`; note the status and headers, the first stream bytes and the end of the body."""
        kind = message["type"]
        if kind == "http.response.start":
            self._start(message)
        elif kind == "http.response.body":
            if self.stream and self.first_chunk and message.get("body"):
                self.first_chunk = False
                if self.metrics is not None:
                    self.metrics.observe_first_chunk(self.route(), time.perf_counter() - self.started)
            if not message.get("more_body", False):
                await self._send(message)
                self.finish(complete=True)
                return
        await self._send(message)

    def _start(self, message: Message) -> None:
        self.status = message["status"]
        headers = list(message.get("headers", ()))
        for name, value in headers:
            lower = name.lower()
            if lower == _UPSTREAM_ID:
                self.upstream_request_id = value.decode("latin-1")[:200]
            elif lower == b"content-type" and value.startswith(_EVENT_STREAM):
                self.stream = True
        headers.append((_REQUEST_ID, self.request_id.encode()))
        message["headers"] = headers
        if self.stream and self.metrics is not None:
            self.metrics.streams.inc()

    def route(self) -> str:
        """The matched route's path template (bounded label values), or `unmatched`."""
        return self.routes.get(self.scope.get("endpoint"), UNMATCHED)

    def finish(self, *, complete: bool) -> None:
        """Count and log the request: its body ended (`complete`), or it stopped early."""
        self.done = True
        seconds = time.perf_counter() - self.started
        status = self.status if self.status is not None else 500  # an exception before any response
        method = self.scope["method"]
        if self.metrics is not None:
            label = method if method in METHODS else "other"
            self.metrics.observe_request(self.route(), label, status, seconds)
            if self.stream:
                self.metrics.streams.dec()
        if log.isEnabledFor(logging.INFO):
            fields: dict[str, Any] = {
                "request_id": self.request_id,
                "method": method,
                "path": self.scope["path"],
                "status": status,
                "latency_ms": round(seconds * 1000, 1),
                "conversation_id": self._conversation_id(),
                "upstream_request_id": self.upstream_request_id,
            }
            if not complete:
                fields["incomplete"] = True
            log.info("request", extra={"fields": fields})

    def _conversation_id(self) -> str | None:
        for name, value in self.scope["headers"]:
            if name == _CONVERSATION:
                return str(value.decode("latin-1")[:200])
        return None

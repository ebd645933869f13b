"""uvicorn's HTTP protocol with read deadlines, so that slow clients cannot hold connections forever.

uvicorn limits idle keep-alive connections (`timeout_keep_alive`) and the number of connections
(`limit_concurrency`, answered 503 beyond it), but a connection that sends nothing, or its headers one
line per second, or its body one byte per second, is held as long as the client likes. This protocol
adds two deadlines (uvicorn offers no option for them):

- the **header deadline** (`GATEWAY_HEADER_TIMEOUT`): a request's line and headers must be complete
  within this many seconds of the connection opening (or of the request's first byte on a kept-alive
  connection);
- the **body deadline** (`GATEWAY_BODY_TIMEOUT`): while a request body is being received, at most this
  many seconds may pass between two pieces of it.

Past either, the gateway answers 408 (when no response has started yet) and closes the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)
TIMEOUT_BODY = (
    b'{"error":{"message":"The request was not received in time.","type":"invalid_request_error",'
    b'"param":null,"code":"request_timeout"}}'
)


class DeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a header deadline and a body read deadline (class attributes, see `bind`)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        waiting = cycle is not None and cycle.waiting_for_100_continue and not cycle.response_started
        if self.flow.read_paused or waiting:  # the application has not asked for the body: no client delay
            self._arm(self.body_timeout)
            return
        if cycle is None or not cycle.response_started:
            self.transport.write(TIMEOUT_RESPONSE % (len(TIMEOUT_BODY), TIMEOUT_BODY))
        if cycle is not None:
            cycle.disconnected = True  # the application sees the client gone
            cycle.message_event.set()
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection and start its header deadline."""
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A new request starts: its headers are due within the header deadline."""
        super().on_message_begin()
        self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        """Headers in: the body (if any) is now read under the body deadline."""
        super().on_headers_complete()
        self._arm(self.body_timeout)

    def on_body(self, body: bytes) -> None:
        """A piece of the body arrived: the next one is due within the body deadline."""
        super().on_body(body)
        self._arm(self.body_timeout)

    def on_message_complete(self) -> None:
        """The whole request is in: no deadline while the application answers."""
        super().on_message_complete()
        self._disarm()


PROTOCOL = "gateway.server:DeadlineProtocol"  # uvicorn's `http` option: imported in every worker


def set_deadlines(header_timeout: float, body_timeout: float) -> None:
    """Set the deadlines of this process's connections (the serve command and each worker, at start)."""
    DeadlineProtocol.header_timeout = header_timeout
    DeadlineProtocol.body_timeout = body_timeout

"""Fault injection: `FAULT:<name>[:<n>]` in the last (user) message makes the mock misbehave.

Names: 500, 503, 429, 400 (error statuses), slow:<ms>, stall, stall-stream, cut, cut-after-usage (a stream
that sends everything, its usage chunk included, but never [DONE]), reset, garbage, huge:<n>, nousage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.types import Receive

from gateway.mock_upstream.errors import MockAPIError, MockConnectionReset
from gateway.mock_upstream.replies import content_text

FAULT_RE = re.compile(r"FAULT:([a-z0-9-]+)(?::(\d+))?")
HUGE_DEFAULT_BYTES = 50_000_000
SLOW_DEFAULT_MS = 1000
STALL_SECONDS = 3600.0
_SERVER_ERROR = "The server had an error while processing your request."
_RATE_LIMITED = (
    "Rate limit reached for requests on the mock upstream. Limit: 1, Used: 1, Requested: 1. "
    "Please try again in 7s."
)


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """A parsed fault marker: its name and optional number."""

    name: str
    arg: int | None = None


def find_fault(messages: Sequence[Mapping[str, Any]]) -> Fault | None:
    """Return the fault asked for by the last message, only when it is a user message."""
    last = messages[-1]
    if last.get("role") != "user":
        return None
    match = FAULT_RE.search(content_text(last.get("content")))
    if match is None:
        return None
    number = match.group(2)
    return Fault(match.group(1), int(number) if number is not None else None)


def raise_error_fault(fault: Fault) -> None:
    """Raise the HTTP error a status-code fault (500, 503, 429, 400) asks for; do nothing otherwise."""
    if fault.name in ("500", "503"):
        raise MockAPIError(int(fault.name), _SERVER_ERROR, error_type="server_error")
    if fault.name == "429":
        raise MockAPIError(
            429,
            _RATE_LIMITED,
            error_type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": "7"},
        )
    if fault.name == "400":
        raise MockAPIError(400, "Invalid request (injected by FAULT:400).", code="invalid_value")


def slow_seconds(fault: Fault | None) -> float:
    """Return how long a `slow` fault delays the answer (0 for any other fault)."""
    if fault is None or fault.name != "slow":
        return 0.0
    return (fault.arg if fault.arg is not None else SLOW_DEFAULT_MS) / 1000


def huge_size(fault: Fault) -> int:
    """Return the content size in bytes a `huge` fault asks for."""
    return fault.arg if fault.arg is not None else HUGE_DEFAULT_BYTES


async def stall_until_disconnect(receive: Receive, seconds: float = STALL_SECONDS) -> None:
    """Wait `seconds`, or less if the client disconnects first (the request body must be read already)."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected(), seconds)


class _QuietResetFilter(logging.Filter):
    """Drops uvicorn's traceback for the connection resets the mock injects on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record except those caused by MockConnectionReset."""
        exc = record.exc_info[1] if record.exc_info else None
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return not isinstance(exc, MockConnectionReset)


def quiet_injected_resets() -> None:
    """Install (once) a filter on uvicorn's error logger that hides injected-reset tracebacks."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietResetFilter) for f in logger.filters):
        logger.addFilter(_QuietResetFilter())

"""Pass-through mode: does the upstream accept a caller's token? Asked once, the answer kept for a while.

In pass-through mode the upstream judges tokens, so the gateway would otherwise store conversations for
any made-up token. Before a caller may create, change or delete a conversation through the conversations
API, the gateway asks the upstream with that token (`GET {upstream}/models`, which costs nothing) and keeps
a positive answer for `GATEWAY_TOKEN_CHECK_SECONDS`. A refusal (401/403) is passed on and not cached; any
other answer is a 502, and nothing is stored either way. Chat turns need no check: a turn is stored only
after the upstream answered it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import httpx

from gateway.errors import TokenRejected, UpstreamError, UpstreamProtocolError
from gateway.upstream import UpstreamClient, read_body

CACHE_LIMIT = 10_000
_BODY_LIMIT = 64 * 1024


def _upstream_message(body: bytes) -> str:
    with contextlib.suppress(ValueError):
        error = json.loads(body).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
    return "the upstream did not accept this API key."


class TokenCheck:
    """Remembers which callers' tokens the upstream accepted (by identity, never the token)."""

    def __init__(
        self, upstream: UpstreamClient, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.upstream = upstream
        self.seconds = seconds
        self.clock = clock
        self._accepted: dict[str, float] = {}

    async def require(self, identity: str, token: str) -> None:
        """Return when the upstream accepts `token`; raise its 401/403 (or a 502) otherwise."""
        if self.upstream.api_key is not None:
            return  # key mode: the gateway itself authenticated the caller's key
        now = self.clock()
        until = self._accepted.get(identity)
        if until is not None and until > now:
            return
        headers = {"authorization": f"Bearer {token}", "accept-encoding": "identity"}
        response = await self.upstream.open("GET", self.upstream.url("/models"), headers, None)
        status = response.status_code
        body = b""
        try:
            if status in (401, 403):
                with contextlib.suppress(UpstreamError):  # the status is the answer
                    body = await read_body(response, _BODY_LIMIT)
        finally:
            with contextlib.suppress(httpx.HTTPError, OSError):
                await response.aclose()
        if status in (401, 403):
            raise TokenRejected(
                f"The upstream refused this API key: {_upstream_message(body)}", status_code=status
            )
        if not 200 <= status < 300:
            raise UpstreamProtocolError(
                f"Could not check the API key with the upstream: GET /models answered {status}."
            )
        if self.seconds > 0:
            if len(self._accepted) >= CACHE_LIMIT:
                self._accepted.clear()
            self._accepted[identity] = now + self.seconds

"""Request helpers shared by the mock's routes: bearer auth, JSON bodies, the request log."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from starlette.requests import Request

from gateway.mock_upstream.errors import MockAPIError

REQUEST_LOG_MAXLEN = 10_000
LOGGED_HEADERS = (
    "authorization",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "idempotency-key",
    "x-stainless-retry-count",
    "x-conversation-id",
    "user-agent",
    "content-type",
)
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
    "username) if you're accessing the API from your browser and are prompted for a username and password. "
    "You can obtain an API key from https://platform.openai.com/account/api-keys."
)


def check_auth(request: Request) -> None:
    """Require `Authorization: Bearer <token>`; a missing token or one starting with `sk-bad` is a 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MockAPIError(401, _NO_KEY)
    if token.startswith("sk-bad"):
        masked = token[:6] + "*" * 8 + token[-4:]
        message = (
            f"Incorrect API key provided: {masked}. "
            "You can find your API key at https://platform.openai.com/account/api-keys."
        )
        raise MockAPIError(401, message, code="invalid_api_key")


async def read_json(request: Request) -> object:
    """Parse the request body as JSON, or raise OpenAI's 400 for an unparsable body."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # nesting too deep to decode is no JSON this upstream reads
        message = (
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
            "valid JSON. If you have trouble figuring out how to fix this, please contact us through our "
            "help center at help.openai.com.)"
        )
        raise MockAPIError(400, message) from None


def new_request_log() -> deque[dict[str, Any]]:
    """Return an empty bounded request log."""
    return deque(maxlen=REQUEST_LOG_MAXLEN)


def record_request(request: Request, body: object) -> None:
    """Append the body and the selected headers of an accepted request to the app's request log."""
    headers = request.headers
    selected = {name: headers[name] for name in LOGGED_HEADERS if name in headers}
    request.app.state.mock_requests.append({"body": body, "headers": selected})

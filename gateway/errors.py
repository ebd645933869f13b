"""The gateway's one error tree and its OpenAI-shaped body.

Catch an error by its level, as with httpx: `ClientError` (the request is refused: 4xx) or `ServerError` (the
gateway cannot serve it: 5xx), and below that `Conflict`, `QuotaExceeded`, `UpstreamError` (any upstream
failure) or `DatabaseUnavailable`. The levels are never raised themselves.

GatewayError
|-- ClientError
|   |-- InvalidRequest ---------- InvalidConversationId, IdempotencyKeyReused
|   |-- AuthenticationFailed ---- TokenRejected
|   |-- Forbidden, NotFound, MethodNotAllowed, RequestTooLarge, UnsupportedEncoding
|   |-- Conflict ---------------- ConversationBusy, ConversationMoved, ConversationExists, KeyExists
|   `-- QuotaExceeded ----------- BudgetExceeded, ConversationLimitReached
`-- ServerError
    |-- UpstreamError
    |   |-- UpstreamUnreachable - UpstreamProtocolError, UpstreamStreamBroken
    |   |-- UpstreamTimeout
    |   `-- UpstreamErrorEvent
    `-- DatabaseUnavailable

Status  type                    code                     raised when
400     invalid_request_error   (varies)                 the request body or a header is malformed
400     invalid_request_error   idempotency_key_reused   an Idempotency-Key already used for another turn
400     invalid_request_error   invalid_path             a proxied path with dot segments, %2F, controls...
400     invalid_request_error   invalid_header           a header value with non-ASCII or control bytes
401     authentication_error    invalid_api_key          a gateway key is required and missing or wrong
401/403 (upstream's)            invalid_api_key          pass-through: the upstream refused the caller's token
403     permission_error        forbidden                an admin-only endpoint without the admin key
403     permission_error        path_not_allowed         key mode: proxied path neither stateless nor tracked
404     invalid_request_error   not_found                an unknown (or another caller's) conversation
405     invalid_request_error   method_not_allowed       the route exists, not for this method
409     conflict_error          conversation_busy        another turn of the conversation held it too long
409     conflict_error          conversation_moved       a turn continued a state the conversation moved past
409     conflict_error          conversation_exists      POST /v1/conversations with an id that already exists
409     conflict_error          key_exists               a gateway key with that name already exists
413     invalid_request_error   request_too_large        the body exceeds GATEWAY_MAX_BODY_BYTES
415     invalid_request_error   unsupported_content_encoding  a body the gateway must read, in br, zstd, ...
429     insufficient_quota      budget_exceeded          a key's or a conversation's cost budget is spent
429     insufficient_quota      conversation_limit_reached  GATEWAY_MAX_CONVERSATIONS_PER_CALLER reached
502     upstream_error          upstream_unreachable     the upstream refused or reset the connection; also
                                                         UpstreamProtocolError (an unusable answer: not JSON,
                                                         malformed, over GATEWAY_MAX_RESPONSE_BYTES) and
                                                         UpstreamStreamBroken (a stream ended before [DONE])
502     server_error            (none)                   UpstreamErrorEvent: an error event in the stream
503     service_unavailable     database_unavailable     the database does not answer
504     upstream_error          upstream_timeout         the upstream did not answer in time

An upstream's own error status (its 4xx or 5xx answer) is passed through as it came, never raised.
UpstreamProtocolError and UpstreamStreamBroken are kinds of UpstreamUnreachable: the API has always reported
them with its code, and code that catches UpstreamUnreachable still sees them.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway renders to a client."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, object]:
        """Return the OpenAI error envelope for this error."""
        return {
            "error": {"message": str(self), "type": self.error_type, "param": self.param, "code": self.code}
        }


# --- 4xx: the request is refused --------------------------------------------------------------------------


class ClientError(GatewayError):
    """Level: the client's request is refused (4xx); retrying it unchanged does not help."""

    status_code, error_type = 400, "invalid_request_error"


class InvalidRequest(ClientError):
    """The request body or a header is malformed (400)."""

    status_code, error_type, code = 400, "invalid_request_error", "invalid_request"


class InvalidConversationId(InvalidRequest):
    """The X-Conversation-Id header is not 1-128 characters of [A-Za-z0-9._:-]."""

    code = "invalid_conversation_id"


class IdempotencyKeyReused(InvalidRequest):
    """An Idempotency-Key that already names a stored turn, sent with different new messages (400)."""

    code = "idempotency_key_reused"


class AuthenticationFailed(ClientError):
    """A gateway key is required and was missing, unknown or revoked (401)."""

    status_code, error_type, code = 401, "authentication_error", "invalid_api_key"


class TokenRejected(AuthenticationFailed):
    """Pass-through mode: the upstream refused the caller's token (its 401 or 403), so nothing is stored."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
        if status_code == 403:
            self.error_type = "permission_error"


class Forbidden(ClientError):
    """The caller may not use this endpoint (403)."""

    status_code, error_type, code = 403, "permission_error", "forbidden"


class NotFound(ClientError):
    """An unknown resource, or one that belongs to another caller (404)."""

    status_code, error_type, code = 404, "invalid_request_error", "not_found"


class MethodNotAllowed(ClientError):
    """The route exists but not for this method (405)."""

    status_code, error_type, code = 405, "invalid_request_error", "method_not_allowed"


class Conflict(ClientError):
    """Level: the resource's current state forbids the request (409)."""

    status_code, error_type = 409, "conflict_error"


class ConversationBusy(Conflict):
    """Another turn of the same conversation held it past the lock timeout (409)."""

    code = "conversation_busy"


class ConversationMoved(Conflict):
    """A turn asked to continue a conversation from a state it has moved past (409; Responses forks on it)."""

    code = "conversation_moved"


class ConversationExists(Conflict):
    """POST /v1/conversations named an id the caller already has (409)."""

    code = "conversation_exists"


class KeyExists(Conflict):
    """A gateway key with that name already exists (409); names are never reused."""

    code = "key_exists"


class RequestTooLarge(ClientError):
    """The request body is larger than GATEWAY_MAX_BODY_BYTES (413)."""

    status_code, error_type, code = 413, "invalid_request_error", "request_too_large"


class UnsupportedEncoding(ClientError):
    """415: a request body in a Content-Encoding the gateway must read but cannot (br, zstd, ...)."""

    status_code, error_type, code = 415, "invalid_request_error", "unsupported_content_encoding"


class QuotaExceeded(ClientError):
    """Level: a limit on what the caller may spend or keep is reached (429, not retried)."""

    status_code, error_type = 429, "insufficient_quota"
    headers = {"x-should-retry": "false"}  # the official SDKs retry 429s unless told not to


class BudgetExceeded(QuotaExceeded):
    """A key's or a conversation's recorded cost reached its budget (429)."""

    code = "budget_exceeded"


class ConversationLimitReached(QuotaExceeded):
    """The caller has GATEWAY_MAX_CONVERSATIONS_PER_CALLER conversations already (429)."""

    code = "conversation_limit_reached"


# --- 5xx: the gateway cannot serve the request ------------------------------------------------------------


class ServerError(GatewayError):
    """Level: the gateway cannot serve the request now (5xx): the upstream or the database failed."""


class UpstreamError(ServerError):
    """Level: the upstream failed (502/504); its own error answers are passed through, not raised."""

    status_code, error_type = 502, "upstream_error"


class UpstreamUnreachable(UpstreamError):
    """The upstream refused the connection or reset it (502)."""

    code = "upstream_unreachable"


class UpstreamProtocolError(UpstreamUnreachable):
    """The upstream answered something unusable: not JSON, malformed, too large, not valid Unicode (502)."""


class UpstreamStreamBroken(UpstreamUnreachable):
    """The upstream's event stream ended before its [DONE] (502)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within GATEWAY_UPSTREAM_TIMEOUT (504)."""

    status_code, code = 504, "upstream_timeout"


class UpstreamErrorEvent(UpstreamError):
    """The upstream's stream sent an error event: its message, type server_error, 502 in the request log."""

    error_type = "server_error"


class DatabaseUnavailable(ServerError):
    """The database did not answer (503)."""

    status_code, error_type, code = 503, "service_unavailable", "database_unavailable"


def error_body(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict[str, object]:
    """Build an OpenAI error envelope from parts (for errors that are not raised)."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}

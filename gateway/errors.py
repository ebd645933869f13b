"""The gateway's one error tree and its OpenAI-shaped body.

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
409     conflict_error          conversation_busy        another turn of the conversation held it too long
409     conflict_error          conversation_exists      POST /v1/conversations with an id that already exists
409     conflict_error          key_exists               a gateway key with that name already exists
413     invalid_request_error   request_too_large        the body exceeds GATEWAY_MAX_BODY_BYTES
429     insufficient_quota      budget_exceeded          a key's or a conversation's cost budget is spent
429     insufficient_quota      conversation_limit_reached  GATEWAY_MAX_CONVERSATIONS_PER_CALLER reached
502     upstream_error          upstream_unreachable     the upstream refused, reset or answered garbage
503     service_unavailable     database_unavailable     the database does not answer
504     upstream_error          upstream_timeout         the upstream did not answer in time
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


class InvalidRequest(GatewayError):
    """The request body or a header is malformed (400)."""

    status_code, error_type, code = 400, "invalid_request_error", "invalid_request"


class InvalidConversationId(InvalidRequest):
    """The X-Conversation-Id header is not 1-128 characters of [A-Za-z0-9._:-]."""

    code = "invalid_conversation_id"


class IdempotencyKeyReused(InvalidRequest):
    """An Idempotency-Key that already names a stored turn, sent with different new messages (400)."""

    code = "idempotency_key_reused"


class AuthenticationFailed(GatewayError):
    """A gateway key is required and was missing, unknown or revoked (401)."""

    status_code, error_type, code = 401, "authentication_error", "invalid_api_key"


class Forbidden(GatewayError):
    """The caller may not use this endpoint (403)."""

    status_code, error_type, code = 403, "permission_error", "forbidden"


class NotFound(GatewayError):
    """An unknown resource, or one that belongs to another caller (404)."""

    status_code, error_type, code = 404, "invalid_request_error", "not_found"


class MethodNotAllowed(GatewayError):
    """The route exists but not for this method (405)."""

    status_code, error_type, code = 405, "invalid_request_error", "method_not_allowed"


class ConversationBusy(GatewayError):
    """Another turn of the same conversation held it past the lock timeout (409)."""

    status_code, error_type, code = 409, "conflict_error", "conversation_busy"


class ConversationMoved(GatewayError):
    """A turn asked to continue a conversation from a state it has moved past (409; Responses forks on it)."""

    status_code, error_type, code = 409, "conflict_error", "conversation_moved"


class ConversationExists(GatewayError):
    """POST /v1/conversations named an id the caller already has (409)."""

    status_code, error_type, code = 409, "conflict_error", "conversation_exists"


class KeyExists(GatewayError):
    """A gateway key with that name already exists (409); names are never reused."""

    status_code, error_type, code = 409, "conflict_error", "key_exists"


class RequestTooLarge(GatewayError):
    """The request body is larger than GATEWAY_MAX_BODY_BYTES (413)."""

    status_code, error_type, code = 413, "invalid_request_error", "request_too_large"


class UnsupportedEncoding(GatewayError):
    """415: a request body in a Content-Encoding the gateway must read but cannot (br, zstd, ...)."""

    status_code, error_type, code = 415, "invalid_request_error", "unsupported_content_encoding"


class BudgetExceeded(GatewayError):
    """A key's or a conversation's recorded cost reached its budget (429)."""

    status_code, error_type, code = 429, "insufficient_quota", "budget_exceeded"
    headers = {"x-should-retry": "false"}  # the official SDKs retry 429s unless told not to


class TokenRejected(GatewayError):
    """Pass-through mode: the upstream refused the caller's token (its 401 or 403), so nothing is stored."""

    error_type, code = "authentication_error", "invalid_api_key"

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
        if status_code == 403:
            self.error_type = "permission_error"


class ConversationLimitReached(GatewayError):
    """The caller has GATEWAY_MAX_CONVERSATIONS_PER_CALLER conversations already (429, not retried)."""

    status_code, error_type, code = 429, "insufficient_quota", "conversation_limit_reached"
    headers = {"x-should-retry": "false"}


class UpstreamUnreachable(GatewayError):
    """The upstream refused the connection, reset it, or answered something unusable (502)."""

    status_code, error_type, code = 502, "upstream_error", "upstream_unreachable"


class UpstreamTimeout(GatewayError):
    """The upstream did not answer within GATEWAY_UPSTREAM_TIMEOUT (504)."""

    status_code, error_type, code = 504, "upstream_error", "upstream_timeout"


class DatabaseUnavailable(GatewayError):
    """The database did not answer (503)."""

    status_code, error_type, code = 503, "service_unavailable", "database_unavailable"


def error_body(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict[str, object]:
    """Build an OpenAI error envelope from parts (for errors that are not raised)."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}

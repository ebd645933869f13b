"""Header names the gateway reads or writes, in one place (all lowercase: HTTP names are case-insensitive)."""

CONVERSATION_ID = "x-conversation-id"
MAX_HISTORY_MESSAGES = "x-max-history-messages"
MAX_HISTORY_TOKENS = "x-max-history-tokens"
HISTORY_MESSAGES = "x-history-messages"
HISTORY_DROPPED = "x-history-dropped"
HISTORY_STRATEGY = "x-history-strategy"  # request: the strategy to apply; response: the strategy applied
HISTORY_SUMMARIZED = "x-history-summarized"
IDEMPOTENCY_KEY = "idempotency-key"
RETRY_COUNT = "x-stainless-retry-count"
REQUEST_ID = "x-request-id"
GATEWAY_REPLAYED = "x-gateway-replayed"
GATEWAY_REQUEST_ID = "x-gateway-request-id"

# RFC 9110 section 7.6.1 plus the usual suspects: never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Request headers the gateway sets itself or consumes, so they are not copied upstream.
NOT_FORWARDED_UPSTREAM = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "cookie",
    "accept-encoding",
    CONVERSATION_ID,
    MAX_HISTORY_MESSAGES,
    MAX_HISTORY_TOKENS,
    HISTORY_STRATEGY,
    IDEMPOTENCY_KEY,
}

# Caller credentials and account routing, never forwarded when the gateway holds the upstream key.
CALLER_CREDENTIALS = frozenset({"api-key", "x-api-key", "openai-organization", "openai-project"})

# Response headers from the upstream that are not passed to the client.
NOT_RETURNED = HOP_BY_HOP | {"content-length", "set-cookie", "server", "date", GATEWAY_REQUEST_ID}

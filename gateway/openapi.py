"""The OpenAPI 3.0 document of the gateway's own endpoints, served at GET /openapi.json.

Forwarded OpenAI endpoints (every other /v1/* path) are the upstream's and are not described here.
"""

from __future__ import annotations

from typing import Any

from gateway.schemas import ID_PATTERN, SCHEMAS, STRING, Schema
from gateway.schemas import ref as _ref


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> Schema:
    return {"description": description, "content": _json(_ref("Error"))}


def _errors(*statuses: int) -> dict[str, Schema]:
    texts = {
        400: "Malformed request (the `param` names the field or header).",
        401: "No valid bearer token (or no valid gateway key when the gateway holds the upstream key; in "
        "pass-through mode, before a conversation write, a token the upstream refused).",
        403: "Not the admin key.",
        404: "Unknown id, or one that belongs to another caller.",
        409: "Conflict (conversation busy, or key name taken).",
        413: "The body is larger than GATEWAY_MAX_BODY_BYTES.",
        429: "A key's or a conversation's cost budget is spent (budget_exceeded), or the caller has "
        "GATEWAY_MAX_CONVERSATIONS_PER_CALLER conversations (conversation_limit_reached).",
        503: "The database is unavailable.",
    }
    return {str(status): _error(texts[status]) for status in statuses}


def _header(name: str, description: str, pattern: str) -> Schema:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


# Pass-through mode: a conversation write first asks the upstream whether it accepts the caller's token.
_TOKEN_CHECK = _error(
    "The upstream's refusal of the caller's token (403), or a 502 when it could not be asked."
)

CONVERSATION_ID: Schema = {
    "name": "conversation_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def _chat_operation() -> Schema:
    return {
        "summary": "A chat completion; stateful when X-Conversation-Id names a conversation.",
        "operationId": "createChatCompletion",
        "parameters": [
            _header("X-Conversation-Id", "The conversation to continue (or start).", ID_PATTERN),
            _header("X-Max-History-Messages", "Most stored messages to replay.", "^[0-9]{1,9}$"),
            _header("X-Max-History-Tokens", "Most stored-history tokens to replay.", "^[0-9]{1,9}$"),
            _header(
                "X-History-Strategy",
                "How the history is trimmed: sliding, stable (the default) or summarize.",
                "^(sliding|stable|summarize)$",
            ),
        ],
        "requestBody": {"required": True, "content": _json(_ref("ChatCompletionRequest"))},
        "responses": {
            "200": {
                "description": "The upstream's completion (JSON), or its event stream when `stream` is true.",
                "content": {
                    **_json(_ref("ChatCompletion")),
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **_errors(400, 401, 404, 409, 413, 429, 503),
            "default": _error(
                "An upstream error, passed through, or a gateway error (502/504 upstream faults)."
            ),
        },
    }


def _conversation_paths() -> dict[str, Schema]:
    one = {"description": "The conversation.", "content": _json(_ref("Conversation"))}
    limit = _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Page size.")
    after = _query("after", STRING, "The last id of the previous page.")
    settings_body = {"required": True, "content": _json(_ref("ConversationUpdate"))}
    update = {
        "summary": "Change metadata, system prompt or settings (never creates).",
        "parameters": [CONVERSATION_ID],
        "requestBody": settings_body,
        "responses": {"200": one, **_errors(400, 401, 404, 409, 413, 503), "default": _TOKEN_CHECK},
    }
    return {
        "/v1/conversations": {
            "get": {
                "summary": "The caller's conversations, newest activity first.",
                "operationId": "listConversations",
                "parameters": [limit, after],
                "responses": {
                    "200": {"description": "A page.", "content": _json(_ref("ConversationList"))},
                    **_errors(400, 401, 503),
                },
            },
            "post": {
                "summary": "Create a conversation before its first turn.",
                "operationId": "createConversation",
                "requestBody": {"required": False, "content": _json(_ref("ConversationCreate"))},
                "responses": {"200": one, **_errors(400, 401, 409, 413, 429, 503), "default": _TOKEN_CHECK},
            },
        },
        "/v1/conversations/{conversation_id}": {
            "get": {
                "summary": "One of the caller's conversations.",
                "operationId": "getConversation",
                "parameters": [CONVERSATION_ID],
                "responses": {"200": one, **_errors(401, 404, 503)},
            },
            "patch": {**update, "operationId": "updateConversation"},
            "post": {**update, "operationId": "updateConversationPost"},
            "delete": {
                "summary": "Delete the conversation and its messages (its usage stays in the request log).",
                "operationId": "deleteConversation",
                "parameters": [CONVERSATION_ID],
                "responses": {
                    "200": {"description": "Deleted.", "content": _json(_ref("Deleted"))},
                    **_errors(401, 404, 409, 503),
                    "default": _TOKEN_CHECK,
                },
            },
        },
        "/v1/conversations/{conversation_id}/messages": {
            "get": {
                "summary": "The stored messages of one of the caller's conversations, oldest first.",
                "operationId": "listConversationMessages",
                "parameters": [CONVERSATION_ID, _query("limit", {"type": "integer"}, "Page size."), after],
                "responses": {
                    "200": {"description": "The messages.", "content": _json(_ref("MessageList"))},
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/v1/conversations/{conversation_id}/items": {
            "get": {
                "summary": "The stored messages as Responses-API items.",
                "operationId": "listConversationItems",
                "parameters": [
                    CONVERSATION_ID,
                    limit,
                    after,
                    _query("order", {"type": "string", "enum": ["asc", "desc"]}, ""),
                ],
                "responses": {
                    "200": {"description": "The items.", "content": _json(_ref("ItemList"))},
                    **_errors(400, 401, 404, 503),
                },
            }
        },
    }


RESPONSE_ID: Schema = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _response_paths() -> dict[str, Schema]:
    """The Responses API, served over the upstream's chat completions (GATEWAY_RESPONSES=translate)."""
    return {
        "/v1/responses": {
            "post": {
                "summary": "A response, served over chat completions; a turn of a conversation when stored.",
                "operationId": "createResponse",
                "requestBody": {"required": True, "content": _json(_ref("ResponseCreateRequest"))},
                "responses": {
                    "200": {
                        "description": "The response (JSON), or its event stream when `stream` is true.",
                        "content": {**_json(_ref("Response")), "text/event-stream": {"schema": STRING}},
                    },
                    **_errors(400, 401, 404, 409, 413, 429, 503),
                    "default": _error("An upstream error, passed through, or a 502/504 upstream fault."),
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "summary": "One of the caller's stored responses.",
                "operationId": "getResponse",
                "parameters": [RESPONSE_ID],
                "responses": {
                    "200": {"description": "The response.", "content": _json(_ref("Response"))},
                    **_errors(401, 404, 503),
                },
            },
            "delete": {
                "summary": "Forget a stored response (its turn stays in its conversation).",
                "operationId": "deleteResponse",
                "parameters": [RESPONSE_ID],
                "responses": {
                    "200": {"description": "Deleted.", "content": _json(_ref("ResponseDeleted"))},
                    **_errors(401, 404, 503),
                },
            },
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "summary": "The input items of a stored response.",
                "operationId": "listResponseInputItems",
                "parameters": [
                    RESPONSE_ID,
                    _query("limit", {"type": "integer"}, "Page size (1-100)."),
                    _query("after", STRING, "An item id: the page starts after it."),
                    _query("order", {"type": "string", "enum": ["asc", "desc"]}, ""),
                ],
                "responses": {
                    "200": {"description": "The items.", "content": _json(_ref("ItemList"))},
                    **_errors(400, 401, 404, 503),
                },
            }
        },
    }


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _usage_paths() -> dict[str, Schema]:
    csv = {"text/csv": {"schema": STRING}}
    return {
        "/v1/usage": {
            "get": {
                "summary": "The caller's usage and cost (every caller's with scope=all and the admin key).",
                "operationId": "getUsage",
                "parameters": [
                    _query(
                        "group_by",
                        {"type": "string", "enum": ["conversation", "model", "day", "caller"]},
                        "Group the totals.",
                    ),
                    _query("since", STRING, "ISO 8601 date or time (inclusive)."),
                    _query("until", STRING, "ISO 8601 date or time (exclusive; a date includes that day)."),
                    _query("format", {"type": "string", "enum": ["json", "csv"]}, "Answer format."),
                    _query("scope", {"type": "string", "enum": ["caller", "all"]}, "all: the admin's view."),
                ],
                "responses": {
                    "200": {
                        "description": "A usage object, or a list of keyed ones when grouped; or CSV.",
                        "content": {**_json({"anyOf": [_ref("Usage"), _ref("UsageList")]}), **csv},
                    },
                    **_errors(400, 401, 403, 503),
                },
            }
        },
        "/v1/conversations/{conversation_id}/usage": {
            "get": {
                "summary": "The usage and cost of one of the caller's conversations.",
                "operationId": "getConversationUsage",
                "parameters": [CONVERSATION_ID],
                "responses": {
                    "200": {
                        "description": "The usage object and conversation_id.",
                        "content": _json(_ref("Usage")),
                    },
                    **_errors(401, 404, 503),
                },
            }
        },
    }


def _admin_paths() -> dict[str, Schema]:
    admin: list[dict[str, list[str]]] = [{"adminKey": []}]
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/admin/keys": {
            "get": {
                "summary": "Every gateway key with its budget and spend (admin only).",
                "operationId": "listKeys",
                "security": admin,
                "responses": {
                    "200": {"description": "The keys.", "content": _json(_ref("KeyList"))},
                    **_errors(401, 403, 503),
                },
            },
            "post": {
                "summary": "Create a gateway key; the answer holds its secret, shown only once (admin only).",
                "operationId": "createKey",
                "security": admin,
                "requestBody": {"required": True, "content": _json(_ref("KeyCreate"))},
                "responses": {
                    "200": {"description": "The new key and its secret.", "content": _json(_ref("Key"))},
                    **_errors(400, 401, 403, 409, 413, 503),
                },
            },
        },
        "/admin/keys/{name}": {
            "delete": {
                "summary": "Revoke a gateway key (idempotent; admin only).",
                "operationId": "revokeKey",
                "security": admin,
                "parameters": [name],
                "responses": {
                    "200": {"description": "The revoked key.", "content": _json(_ref("Key"))},
                    **_errors(401, 403, 404, 503),
                },
            }
        },
    }


def _ops_paths() -> dict[str, Schema]:
    health = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]}},
    }
    return {
        "/healthz": {
            "get": {
                "summary": "200 when the database answers.",
                "operationId": "healthz",
                "security": [],
                "responses": {
                    "200": {"description": "Healthy.", "content": _json(health)},
                    "503": {"description": "The database does not answer.", "content": _json(health)},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.0", "content": _json({"type": "object"})}},
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "gateway",
            "version": "0.1.0",
            "description": "An OpenAI-compatible stateful proxy: the gateway's own endpoints.",
        },
        "paths": {
            "/v1/chat/completions": {"post": _chat_operation()},
            **_response_paths(),
            **_conversation_paths(),
            **_usage_paths(),
            **_admin_paths(),
            **_ops_paths(),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The caller's token or gateway key.",
                },
                "adminKey": {"type": "http", "scheme": "bearer", "description": "GATEWAY_ADMIN_KEY."},
            },
        },
        "security": [{"bearer": []}],
    }

"""The OpenAPI 3.0 document of the gateway's own endpoints, served at GET /openapi.json.

Forwarded OpenAI endpoints (every other /v1/* path) are the upstream's and are not described here.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"
KEY_NAME_PATTERN = "^[A-Za-z0-9._:-]{1,64}$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> Schema:
    return {"description": description, "content": _json(_ref("Error"))}


def _errors(*statuses: int) -> dict[str, Schema]:
    texts = {
        400: "Malformed request (the `param` names the field or header).",
        401: "No valid bearer token (or no valid gateway key when the gateway holds the upstream key).",
        403: "Not the admin key.",
        404: "Unknown id, or one that belongs to another caller.",
        409: "Conflict (conversation busy, or key name taken).",
        413: "The body is larger than GATEWAY_MAX_BODY_BYTES.",
        429: "A key's or a conversation's cost budget is spent (budget_exceeded).",
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


STRING: Schema = {"type": "string"}
NULLABLE_NUMBER: Schema = {"type": "number", "nullable": True}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True},
                },
            }
        },
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {
                "nullable": True,
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["type", "text"],
                            "properties": {
                                "type": {"type": "string", "enum": ["text"]},
                                "text": {"type": "string"},
                            },
                        },
                    },
                ],
            },
            "name": {"type": "string"},
            "tool_call_id": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "description": "OpenAI's chat-completions body; fields the gateway does not read go upstream.",
        "properties": {
            "model": {"type": "string", "minLength": 1, "maxLength": 200},
            "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            "stream": {"type": "boolean", "nullable": True},
            "stream_options": {
                "type": "object",
                "nullable": True,
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "tools": {"type": "array", "nullable": True, "items": {"type": "object"}},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["object", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object", "nullable": True},
        },
    },
    "Conversation": {
        "type": "object",
        "required": ["id", "object", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["conversation"]},
            "created_at": {"type": "integer"},
            "updated_at": {"type": "integer"},
            "system_prompt": {"type": "string", "nullable": True},
            "message_count": {"type": "integer"},
        },
    },
    "MessageList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["role", "created_at"],
                    "properties": {"role": {"type": "string"}, "created_at": {"type": "integer"}},
                },
            },
        },
    },
    "Usage": {
        "type": "object",
        "required": ["requests", "prompt_tokens", "completion_tokens", "cost_usd", "by_model"],
        "properties": {
            "requests": {"type": "integer"},
            "prompt_tokens": {"type": "integer", "nullable": True},
            "completion_tokens": {"type": "integer", "nullable": True},
            "history_tokens": {"type": "integer", "nullable": True},
            "cost_usd": NULLABLE_NUMBER,
            "history_cost_usd": NULLABLE_NUMBER,
            "unpriced_requests": {"type": "integer"},
            "by_model": {"type": "array", "items": {"type": "object"}},
        },
    },
    "UsageList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"type": "object", "required": ["key", "requests"]}},
        },
    },
    "Key": {
        "type": "object",
        "required": ["object", "name", "identity", "created_at", "revoked_at", "budget_usd", "spent_usd"],
        "properties": {
            "object": {"type": "string", "enum": ["gateway.key"]},
            "name": {"type": "string"},
            "identity": {"type": "string", "description": "SHA-256 of the secret: the caller's identity."},
            "created_at": {"type": "integer"},
            "revoked_at": {"type": "integer", "nullable": True},
            "budget_usd": NULLABLE_NUMBER,
            "spent_usd": {"type": "number"},
            "secret": {"type": "string", "description": "Only in the answer to the create call."},
        },
    },
    "KeyCreate": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": KEY_NAME_PATTERN},
            "budget_usd": {"type": "number", "minimum": 0, "maximum": 1_000_000, "nullable": True},
        },
    },
    "KeyList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref("Key")},
        },
    },
}

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
    return {
        "/v1/conversations/{conversation_id}": {
            "get": {
                "summary": "One of the caller's conversations.",
                "operationId": "getConversation",
                "parameters": [CONVERSATION_ID],
                "responses": {
                    "200": {"description": "The conversation.", "content": _json(_ref("Conversation"))},
                    **_errors(401, 404, 503),
                },
            }
        },
        "/v1/conversations/{conversation_id}/messages": {
            "get": {
                "summary": "The stored messages of one of the caller's conversations, oldest first.",
                "operationId": "listConversationMessages",
                "parameters": [CONVERSATION_ID],
                "responses": {
                    "200": {"description": "The messages.", "content": _json(_ref("MessageList"))},
                    **_errors(401, 404, 503),
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

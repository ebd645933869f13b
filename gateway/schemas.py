"""JSON schemas of the gateway's own request and response bodies, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from gateway.config import HISTORY_STRATEGIES as STRATEGIES

Schema = dict[str, Any]

ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"
KEY_NAME_PATTERN = "^[A-Za-z0-9._:-]{1,64}$"


def ref(name: str) -> Schema:
    """A reference to one of SCHEMAS."""
    return {"$ref": f"#/components/schemas/{name}"}


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
            "messages": {"type": "array", "minItems": 1, "items": ref("ChatMessage")},
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
        "required": ["id", "object", "created_at", "metadata", "settings"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["conversation"]},
            "created_at": {"type": "integer"},
            "updated_at": {"type": "integer"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "system_prompt": {"type": "string", "nullable": True},
            "message_count": {"type": "integer"},
            "settings": {
                "type": "object",
                "properties": {
                    "max_history_messages": {"type": "integer", "nullable": True},
                    "max_history_tokens": {"type": "integer", "nullable": True},
                    "max_cost_usd": NULLABLE_NUMBER,
                    "history_strategy": {"type": "string", "nullable": True, "enum": [*STRATEGIES, None]},
                    "summary_model": {"type": "string", "nullable": True},
                },
            },
            "summary": {
                "type": "object",
                "nullable": True,
                "required": ["text", "tokens", "through", "updated_at"],
                "properties": {
                    "text": {"type": "string"},
                    "tokens": {"type": "integer"},
                    "through": {"type": "integer", "description": "Stored messages the summary covers."},
                    "updated_at": {"type": "integer"},
                },
            },
            "usage": ref("Usage"),
        },
    },
    "ConversationUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "metadata": {"type": "object", "nullable": True, "additionalProperties": {"type": "string"}},
            "system_prompt": {"type": "string", "nullable": True},
            "max_history_messages": {"type": "integer", "minimum": 0, "nullable": True},
            "max_history_tokens": {"type": "integer", "minimum": 0, "nullable": True},
            "max_cost_usd": {"type": "number", "minimum": 0, "nullable": True},
            "history_strategy": {"type": "string", "nullable": True, "enum": [*STRATEGIES, None]},
            "summary_model": {"type": "string", "minLength": 1, "maxLength": 200, "nullable": True},
            "summary": {
                "type": "string",
                "minLength": 1,
                "nullable": True,
                "description": "Replaces the summary's text (keeps `through`); null clears it. Update only.",
            },
        },
    },
    "ConversationList": {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": ref("Conversation")},
            "first_id": {"type": "string", "nullable": True},
            "last_id": {"type": "string", "nullable": True},
            "has_more": {"type": "boolean"},
        },
    },
    "Deleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["conversation.deleted"]},
            "deleted": {"type": "boolean"},
        },
    },
    "ResponseCreateRequest": {
        "type": "object",
        "required": ["model"],
        "description": "OpenAI's Responses body, translated to chat completions (see docs/api.md).",
        "properties": {
            "model": {"type": "string", "minLength": 1, "maxLength": 200},
            "input": {
                "nullable": True,
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
            },
            "instructions": {"type": "string", "nullable": True},
            "previous_response_id": {"type": "string", "nullable": True},
            "conversation": {
                "nullable": True,
                "oneOf": [
                    {"type": "string", "pattern": ID_PATTERN},
                    {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
                ],
            },
            "store": {"type": "boolean", "nullable": True},
            "stream": {"type": "boolean", "nullable": True},
            "tools": {"type": "array", "nullable": True, "items": {"type": "object"}},
            "metadata": {"type": "object", "nullable": True, "additionalProperties": {"type": "string"}},
        },
    },
    "Response": {
        "type": "object",
        "required": ["id", "object", "created_at", "status", "model", "output"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["response"]},
            "created_at": {"type": "integer"},
            "status": {"type": "string", "enum": ["completed", "incomplete", "failed", "in_progress"]},
            "model": {"type": "string"},
            "output": {"type": "array", "items": {"type": "object", "required": ["type"]}},
            "usage": {"type": "object", "nullable": True},
            "previous_response_id": {"type": "string", "nullable": True},
            "conversation": {"type": "object", "nullable": True},
        },
    },
    "ResponseDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["response.deleted"]},
            "deleted": {"type": "boolean"},
        },
    },
    "ItemList": {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"type": "object", "required": ["id", "type"]}},
            "has_more": {"type": "boolean"},
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
            "cache_write_tokens": {"type": "integer", "nullable": True},
            "summary_tokens": {"type": "integer", "nullable": True},
            "summary_cost_usd": NULLABLE_NUMBER,
            "full_replay_cost_usd": NULLABLE_NUMBER,
            "saved_usd": NULLABLE_NUMBER,
            "estimated_requests": {
                "type": "integer",
                "description": "Calls charged the gateway's estimate (a stream ended without usage).",
            },
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
            "data": {"type": "array", "items": ref("Key")},
        },
    },
}

SCHEMAS["ConversationCreate"] = {
    **SCHEMAS["ConversationUpdate"],
    "properties": {
        **{k: v for k, v in SCHEMAS["ConversationUpdate"]["properties"].items() if k != "summary"},
        "id": {"type": "string", "pattern": ID_PATTERN},
        "items": {
            "type": "array",
            "maxItems": 0,
            "description": "Not supported: send the first turn instead.",
        },
    },
}

"""Pure checks of the conversations API's bodies and queries: metadata, system prompt, settings, paging."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway import money
from gateway.config import HISTORY_STRATEGIES
from gateway.errors import InvalidRequest
from gateway.identity import CONVERSATION_ID_PATTERN

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
MAX_HISTORY_SETTING = 2**31 - 1
"""The largest history limit a conversation can store (a 32-bit column)."""

SETTING_FIELDS = (
    "max_history_messages",
    "max_history_tokens",
    "max_cost_usd",
    "history_strategy",
    "summary_model",
)
CREATE_FIELDS = frozenset({"metadata", "system_prompt", *SETTING_FIELDS, "id", "items"})
UPDATE_FIELDS = frozenset({"metadata", "system_prompt", *SETTING_FIELDS, "summary"})
MAX_MODEL_CHARS = 200


def _invalid_type(name: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid type for '{name}': expected {expected}.", param=name, code="invalid_type")


def _invalid_value(name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{name}': {message}", param=name, code="invalid_value")


def check_metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's metadata rules: up to 16 keys of at most 64 characters, string values of at most 512."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_type("metadata", "an object")
    if len(value) > METADATA_MAX_KEYS:
        raise _invalid_value(
            "metadata", f"an object with at most {METADATA_MAX_KEYS} keys, got {len(value)}."
        )
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY_CHARS:
            raise _invalid_value(
                "metadata", f"keys are at most {METADATA_MAX_KEY_CHARS} characters, got {len(key)}."
            )
        if not isinstance(item, str):
            raise _invalid_type(f"metadata.{key}", "a string")
        if len(item) > METADATA_MAX_VALUE_CHARS:
            raise _invalid_value(
                f"metadata.{key}",
                f"values are at most {METADATA_MAX_VALUE_CHARS} characters, got {len(item)}.",
            )
    return dict(value)


def check_history_limit(name: str, value: Any) -> int | None:
    """A stored history limit: null, or a whole number from 0 to 2**31 - 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(name, "a non-negative integer or null")
    if not 0 <= value <= MAX_HISTORY_SETTING:
        raise _invalid_value(name, f"expected an integer from 0 to {MAX_HISTORY_SETTING}, got {value}.")
    return value


def check_strategy(value: Any, param: str = "history_strategy") -> str | None:
    """A history strategy: null, or one of sliding, stable and summarize (400 naming anything else)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid_type(param, "a string or null")
    if value not in HISTORY_STRATEGIES:
        raise InvalidRequest(
            f"Unknown history strategy {value!r} in '{param}': expected one of sliding, stable or summarize.",
            param=param,
            code="invalid_value",
        )
    return value


def check_summary_model(value: Any) -> str | None:
    """The model of a conversation's summary calls: null, or a model name of 1-200 characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid_type("summary_model", "a string or null")
    if not value.strip() or len(value) > MAX_MODEL_CHARS or not value.isprintable():
        expected = f"expected a model name of 1-{MAX_MODEL_CHARS} printable characters."
        raise _invalid_value("summary_model", expected)
    return value


def check_summary(value: Any) -> str | None:
    """A summary text given by PATCH: a non-empty string, or null to clear the summary."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid_type("summary", "a string or null")
    if not value.strip():
        raise _invalid_value("summary", "expected a non-empty string (null clears the summary).")
    return value


def check_system_prompt(value: Any) -> list[dict[str, Any]] | None:
    """A system prompt given as text: the stored system messages (one `system` message), or None to clear."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid_type("system_prompt", "a string or null")
    if not value:
        raise _invalid_value("system_prompt", "expected a non-empty string (null clears the system prompt).")
    return [{"role": "system", "content": value}]


def check_new_id(value: Any) -> str:
    """The id of a conversation to create: 1-128 characters of [A-Za-z0-9._:-], like X-Conversation-Id."""
    if not isinstance(value, str):
        raise _invalid_type("id", "a string")
    if CONVERSATION_ID_PATTERN.fullmatch(value) is None:
        raise _invalid_value("id", "expected 1-128 characters of letters, digits, '.', '_', ':' or '-'.")
    return value


def conversation_columns(body: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """Validate a create or update body; return the conversation columns to set (null clears a field).

    Only the fields present in the body are returned; `id` and `items` are checked by the caller.
    """
    for name in body:
        if name not in allowed:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter"
            )
    columns: dict[str, Any] = {}
    if "metadata" in body:
        metadata = check_metadata(body["metadata"])
        columns["metadata_json"] = json.dumps(metadata, ensure_ascii=False) if metadata else None
    if "system_prompt" in body:
        system = check_system_prompt(body["system_prompt"])
        columns["system_messages"] = json.dumps(system, ensure_ascii=False) if system else None
    for name in ("max_history_messages", "max_history_tokens"):
        if name in body:
            columns[name] = check_history_limit(name, body[name])
    if "max_cost_usd" in body:
        columns["max_cost_pusd"] = money.parse_usd(body["max_cost_usd"], "max_cost_usd")
    if "history_strategy" in body:
        columns["history_strategy"] = check_strategy(body["history_strategy"])
    if "summary_model" in body:
        columns["summary_model"] = check_summary_model(body["summary_model"])
    if "summary" in body:
        columns["summary_text"] = check_summary(body["summary"])  # the handler completes the summary
    return columns


def page_limit(raw: str | None, *, default: int, maximum: int) -> int:
    """The `limit` query parameter: a whole number from 1 to `maximum`; `default` when absent."""
    if raw is None:
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= maximum:
        raise _invalid_value("limit", f"expected an integer from 1 to {maximum}, got {raw!r}.")
    return int(text)


def page_order(raw: str | None, *, default: str) -> str:
    """The `order` query parameter: `asc` or `desc`."""
    if raw is None:
        return default
    if raw not in ("asc", "desc"):
        raise _invalid_value("order", f"expected 'asc' or 'desc', got {raw!r}.")
    return raw

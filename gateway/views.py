"""The JSON views that the API and the CLI both show: a conversation, a key; exact-decimal JSON rendering."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gateway import money
from gateway.history import system_prompt_text
from gateway.keys import KeyInfo

if TYPE_CHECKING:  # only its attributes are read: the views (and reports) stay free of SQLAlchemy
    from gateway.store.tables import Conversation


def render_json(
    value: Any, *, indent: int | None = None, separators: tuple[str, str] = (",", ":"), _depth: int = 0
) -> str:
    """JSON in which Decimals are exact numbers (json.dumps would need floats); compact by default, else
    laid out like json.dumps with the same `indent` and `separators`."""
    if isinstance(value, Decimal):
        return money.usd_text(value)
    item_sep, key_sep = separators
    if isinstance(value, dict | list | tuple):
        pairs = isinstance(value, dict)
        if not value:
            return "{}" if pairs else "[]"
        inner = [
            (f"{json.dumps(str(k), ensure_ascii=False)}{key_sep}" if pairs else "")
            + render_json(v, indent=indent, separators=separators, _depth=_depth + 1)
            for k, v in (value.items() if isinstance(value, dict) else enumerate(value))
        ]
        opening, closing = ("{", "}") if pairs else ("[", "]")
        if indent is None:
            return opening + item_sep.join(inner) + closing
        pad, outer = "\n" + " " * (indent * (_depth + 1)), "\n" + " " * (indent * _depth)
        return opening + pad + (item_sep + pad).join(inner) + outer + closing
    return json.dumps(value, ensure_ascii=False)


def conversation_object(conversation: Conversation) -> dict[str, Any]:
    """The JSON shape of a conversation without its usage: OpenAI's fields, then the gateway's."""
    system = json.loads(conversation.system_messages) if conversation.system_messages else None
    return {
        "id": conversation.id,
        "object": "conversation",
        "created_at": int(conversation.created_at),
        "metadata": json.loads(conversation.metadata_json) if conversation.metadata_json else {},
        "updated_at": int(conversation.updated_at),
        "system_prompt": system_prompt_text(system),
        "message_count": conversation.message_count,
        "settings": {
            "max_history_messages": conversation.max_history_messages,
            "max_history_tokens": conversation.max_history_tokens,
            "max_cost_usd": money.usd(conversation.max_cost_pusd),
            "history_strategy": conversation.history_strategy,
            "summary_model": conversation.summary_model,
        },
        "summary": summary_object(conversation),
    }


def summary_object(conversation: Conversation) -> dict[str, Any] | None:
    """The conversation's summary as shown by the API: null, or its text, tokens, through and updated_at."""
    if conversation.summary_text is None:  # read as store.conversations.stored_summary reads it
        return None
    return {
        "text": conversation.summary_text,
        "tokens": conversation.summary_tokens or 0,
        "through": conversation.summary_through or 0,
        "updated_at": int(conversation.summary_updated_at or conversation.updated_at),
    }


def key_object(key: KeyInfo, secret: str | None = None) -> dict[str, Any]:
    """The JSON shape of a key; `secret` only in the answer that created it."""
    body: dict[str, Any] = {
        "object": "gateway.key",
        "name": key.name,
        "identity": key.identity,
        "created_at": int(key.created_at),
        "revoked_at": int(key.revoked_at) if key.revoked_at is not None else None,
        "budget_usd": money.usd(key.budget_pusd),
        "spent_usd": money.usd(key.spent_pusd),
    }
    if secret is not None:
        body["secret"] = secret
    return body

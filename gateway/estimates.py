"""Pure: the gateway's own token counts, for calls the upstream's usage does not cover.

A stream that ends without usage (abandoned by the client, cut, or from an upstream that never sends
it) is charged an estimate: the prompt counted with the offline tokenizer (gateway/tokens.py) plus the
tokens of the text the reply generated so far. A call of a key with a budget reserves, while it runs,
its prompt plus the completion it may produce: `max_completion_tokens`, `max_tokens` or
`max_output_tokens` when the request sets one, else the default allowance
(`GATEWAY_BUDGET_RESERVE_TOKENS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.pricing import MAX_COUNT, Usage
from gateway.tokens import count_message_tokens, count_text_tokens

REPLY_PRIMING_TOKENS = 3  # OpenAI's cookbook: every reply is primed with 3 tokens
_PROMPT_FIELDS = ("messages", "input", "prompt", "instructions", "system", "tools")
_COMPLETION_LIMITS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_MAX_DEPTH = 64


def chat_prompt_tokens(messages: Iterable[Mapping[str, Any]], model: str | None) -> int:
    """The prompt tokens of a chat request's messages, as OpenAI's cookbook counts them."""
    return sum(count_message_tokens(m, model) for m in messages) + REPLY_PRIMING_TOKENS


def _strings(value: Any, depth: int = 0) -> Iterable[str]:
    """Every string inside a JSON value (keys of objects excluded), up to a bounded depth."""
    if isinstance(value, str):
        yield value
    elif depth < _MAX_DEPTH and isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)
    elif depth < _MAX_DEPTH and isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, depth + 1)


def body_prompt_tokens(body: Mapping[str, Any], model: str | None) -> int:
    """An estimate of the prompt of any OpenAI request body: the tokens of every text in its prompt fields.

    Chat messages are counted as in `chat_prompt_tokens`; the texts of `input` (Responses, embeddings),
    `prompt` (completions), `instructions` and `tools` are counted as plain text.
    """
    messages = body.get("messages")
    total = 0
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        total += chat_prompt_tokens(messages, model)
    for name in _PROMPT_FIELDS[1:]:
        total += sum(count_text_tokens(text, model) for text in _strings(body.get(name)))
    return min(total, MAX_COUNT)


def completion_allowance(body: Mapping[str, Any], default: int) -> int:
    """The completion tokens a call may produce: its own limit when it sets one, else `default`."""
    for name in _COMPLETION_LIMITS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return min(value, MAX_COUNT)
    return default


def estimated_usage(prompt_tokens: int, generated: str, model: str | None) -> Usage:
    """The usage to charge for a call without reported usage: the prompt plus the generated text's tokens."""
    completion = count_text_tokens(generated, model) if generated else 0
    return Usage(prompt_tokens=min(prompt_tokens, MAX_COUNT), completion_tokens=min(completion, MAX_COUNT))

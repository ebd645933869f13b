"""How the gateway's stored-message token counts relate to the prompt_tokens an OpenAI upstream reports.

There is no real OpenAI API in the tests, so the reference is OpenAI's cookbook ("How to count tokens with
tiktoken", sections 6 and 7), which prints the prompt_tokens the API reported for its examples. The
docs/history.md ("Token counting") quotes these results.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.tokens import count_message_tokens, count_text_tokens

REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>: per request, not per message

# Section 7: one tool definition and two messages; the API reported 105 (gpt-3.5-turbo, gpt-4)
# and 101 (gpt-4o, gpt-4o-mini) prompt tokens.
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def cookbook_tool_tokens(tools: list[dict[str, Any]], model: str) -> int:
    """The cookbook's empirical formula for the tokens of tool definitions (the gateway never counts them)."""
    func_init = 7 if model.startswith("gpt-4o") else 10
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    total = 0
    for tool in tools:
        function = tool["function"]
        total += func_init + count_text_tokens(
            f"{function['name']}:{function['description'].rstrip('.')}", model
        )
        properties = function["parameters"]["properties"]
        if properties:
            total += prop_init
            for name, spec in properties.items():
                total += prop_key
                if "enum" in spec:
                    total += enum_init + sum(enum_item + count_text_tokens(v, model) for v in spec["enum"])
                total += count_text_tokens(f"{name}:{spec['type']}:{spec['description'].rstrip('.')}", model)
    return total + func_end


@pytest.mark.parametrize(
    ("model", "reported", "messages_part"),
    [("gpt-3.5-turbo", 105, 31), ("gpt-4", 105, 31), ("gpt-4o", 101, 30), ("gpt-4o-mini", 101, 30)],
)
def test_cookbook_tool_example(model: str, reported: int, messages_part: int) -> None:
    """Messages are counted exactly; the rest of prompt_tokens is reply priming and tool definitions."""
    counted = sum(count_message_tokens(m, model) for m in MESSAGES)
    assert counted == messages_part
    assert counted + REPLY_PRIMING + cookbook_tool_tokens(TOOLS, model) == reported

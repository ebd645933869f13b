"""What the dashboard tests seed: two callers' conversations, a stored XSS payload, tool calls, a failure."""

from __future__ import annotations

from typing import Any

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
PRIVATE_A = "alpha-private-fact-7731"
SYSTEM_A = "You are the support agent of caller A."

# (conversation id, history budget header or None, the turn's new messages); caller A's.
TOOL_TURN: list[dict[str, Any]] = [
    {"role": "user", "content": "What is the weather in Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_rome",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_rome", "content": "22 C and sunny"},
]
TURNS_A: list[tuple[str, str | None, list[dict[str, Any]]]] = [
    ("support-a", None, [{"role": "system", "content": SYSTEM_A}, {"role": "user", "content": PRIVATE_A}]),
    ("support-a", None, [{"role": "user", "content": XSS}]),
    ("support-a", None, TOOL_TURN),
    ("support-a", "4", [{"role": "user", "content": "And tomorrow?"}]),
    ("short-a", None, [{"role": "user", "content": "hello"}]),
    ("short-a", None, [{"role": "user", "content": "FAULT:500"}]),
]
TURNS_B: list[tuple[str, str | None, list[dict[str, Any]]]] = [
    ("bravo-only", None, [{"role": "user", "content": "bravo says hi"}]),
]

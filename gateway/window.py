"""Pure history strategies: which stored turns a request replays, where the stable window is cut, and the
messages of a conversation's summary.

- `sliding`: the longest suffix of whole turns that fits the limits (`history.select_window`); the prefix
  after the system prompt shifts on every turn once the limits are reached.
- `stable`: whole turns from a stored start that only moves forward. While the window fits the limits it
  grows at its end, so every request of the conversation starts with the same messages and an upstream's
  prefix cache hits; when it would exceed a limit, the oldest whole turns are dropped until it is at most
  `trim_to` of each limit (a *cut*), and the new start is stored.
- `summarize`: `stable`, plus a running summary of what the window dropped, folded in at each cut.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import HISTORY_STRATEGIES, ConfigError
from gateway.history import Budget, StoredMessage, content_text, select_window

Message = dict[str, Any]
STRATEGIES = HISTORY_STRATEGIES

SUMMARY_HEADING = "Summary of the earlier part of this conversation (its messages are not repeated here):"
"""The first line of the summary message; the summary's text follows after a blank line."""

DEFAULT_SUMMARY_PROMPT = (
    "You maintain the running summary of a conversation between a user and an assistant. You get the "
    "summary so far and the messages to fold into it. Answer with the updated summary only, as short "
    "plain-text lines. Keep every name, number, date, fact, decision, preference and open task or question, "
    "exactly as stated; drop pleasantries and repetition. Never invent anything."
)
SUMMARY_SO_FAR = "Summary so far:"
MESSAGES_TO_FOLD = "Messages to fold into the summary:"
"""A line of every summary request (the mock upstream recognizes summary requests by it)."""


@dataclass(frozen=True)
class WindowPlan:
    """What one request replays: the stored messages to send and, after a cut, the window's new start."""

    history: list[StoredMessage]
    start: int  # the stable window's start after this request (unchanged for `sliding`)
    cut: bool = False  # True when this request moved the start forward


def trim_budget(budget: Budget, trim_to: float) -> Budget:
    """The limits a cut trims to: `trim_to` of each limit, rounded down (whole messages and tokens)."""

    def part(limit: int | None) -> int | None:
        return None if limit is None else math.floor(limit * trim_to + 1e-9)

    return Budget(max_messages=part(budget.max_messages), max_tokens=part(budget.max_tokens))


def fits(budget: Budget, messages: int, tokens: int) -> bool:
    """True when a window of this many messages and tokens is within every limit."""
    return (budget.max_messages is None or messages <= budget.max_messages) and (
        budget.max_tokens is None or tokens <= budget.max_tokens
    )


def stable_window(
    candidates: Sequence[StoredMessage],
    budget: Budget,
    *,
    start: int,
    anchor: StoredMessage | None,
    message_count: int,
    token_count: int,
    trim_to: float,
) -> WindowPlan:
    """The stable window of one request.

    `candidates` are a suffix of the stored messages that holds every whole turn fitting `budget` (what
    the indexed window query reads); `anchor` is the first stored user message at or after `start`
    (None when there is none). The window is the whole turns from the anchor on; when they exceed a
    limit, the start moves to the oldest turn from which the rest fits `trim_to` of every limit (or past
    the end when no turn does).
    """
    if anchor is None:
        return WindowPlan([], start)
    if fits(budget, message_count - anchor.seq, token_count - anchor.turn_start_tokens):
        return WindowPlan([m for m in candidates if m.seq >= anchor.seq], start)
    kept = select_window(candidates, trim_budget(budget, trim_to), message_count, token_count)
    new_start = kept[0].seq if kept else message_count
    return WindowPlan(kept, max(new_start, start), cut=True)


def reference_stable_window(
    stored: Sequence[StoredMessage], budget: Budget, start: int, trim_to: float
) -> WindowPlan:
    """`stable_window` over a whole stored history, by brute force (the reference the tests compare to)."""
    turn_starts = [m.seq for m in stored if m.body.get("role") == "user"]
    anchor = next((seq for seq in turn_starts if seq >= start), None)
    if anchor is None:
        return WindowPlan([], start)

    def window(first: int) -> list[StoredMessage]:
        return [m for m in stored if m.seq >= first]

    def within(messages: list[StoredMessage], limits: Budget) -> bool:
        return fits(limits, len(messages), sum(m.tokens for m in messages))

    if within(window(anchor), budget):
        return WindowPlan(window(anchor), start)
    trimmed = trim_budget(budget, trim_to)
    for seq in turn_starts:
        if seq > anchor and within(window(seq), trimmed):
            return WindowPlan(window(seq), seq, cut=True)
    return WindowPlan([], len(stored), cut=True)


def summary_message(text: str) -> Message:
    """The one message that carries a conversation's summary, sent right after the stored system prompt."""
    return {"role": "system", "content": f"{SUMMARY_HEADING}\n\n{text}"}


def _transcript_line(message: Message) -> str:
    role = str(message.get("role"))
    text = content_text(message.get("content"))
    if role == "tool":
        return f"tool ({message.get('tool_call_id')}): {text}"
    calls = message.get("tool_calls")
    lines = [f"{role}: {text}"] if text or not calls else []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            lines.append(f"{role} called {function.get('name')}({function.get('arguments')})")
    return "\n".join(lines)


def summary_request(prompt: str, previous: str | None, messages: Sequence[Message]) -> list[Message]:
    """The messages of a summary call: the prompt, then the summary so far and the messages to fold in."""
    transcript = "\n".join(line for line in (_transcript_line(m) for m in messages) if line)
    user = f"{SUMMARY_SO_FAR}\n{previous or '(none)'}\n\n{MESSAGES_TO_FOLD}\n{transcript}"
    return [{"role": "system", "content": prompt}, {"role": "user", "content": user}]


def load_summary_prompt(path: str | None) -> str:
    """The summary prompt: the file's text (GATEWAY_SUMMARY_PROMPT_FILE) or the built-in one."""
    if path is None:
        return DEFAULT_SUMMARY_PROMPT
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the summary prompt file {path}: {exc}") from None
    if not text:
        raise ConfigError(f"the summary prompt file {path} is empty")
    return text

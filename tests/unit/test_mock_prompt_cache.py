"""The mock upstream's prompt cache and its deterministic summaries."""

from __future__ import annotations

from gateway.mock_upstream.cache import PromptCache, cacheable, message_tokens
from gateway.mock_upstream.replies import mock_reply, mock_summary
from gateway.window import summary_request

BIG = {"role": "system", "content": "x" * 4400}  # 4 + 4402 // 4 = 1104 tokens


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cached_tokens_are_the_longest_shared_prefix_in_128_token_steps() -> None:
    cache = PromptCache()
    first = [BIG, {"role": "user", "content": "one"}]
    assert cache.lookup("k", "m", first) == 0  # nothing seen yet
    assert message_tokens(BIG) == 1104 and cacheable(1104) == 1024
    # the same prefix again: the system prompt (1,104 tokens) and "one" (6) are shared: 1,110 -> 1,024
    assert cache.lookup("k", "m", [*first, {"role": "user", "content": "two"}]) == 1024
    assert cache.lookup("k", "m", [BIG, {"role": "user", "content": "other"}]) == 1024  # only the system
    assert cache.lookup("other-key", "m", first) == 0  # per API key
    assert cache.lookup("k", "other-model", first) == 0  # per model
    assert cache.lookup("k", "m", [{"role": "system", "content": "short"}]) == 0
    assert cacheable(1023) == 0 and cacheable(1300) == 1280


def test_prefixes_are_forgotten_after_five_idle_minutes() -> None:
    clock = Clock()
    cache = PromptCache(clock=clock)
    cache.lookup("k", "m", [BIG])
    clock.now = 299.0
    assert cache.lookup("k", "m", [BIG]) == 1024  # used again: its idle time starts over
    clock.now = 299.0 + 301.0
    assert cache.lookup("k", "m", [BIG]) == 0


def test_summary_requests_keep_the_lines_that_state_facts() -> None:
    messages = [
        {"role": "user", "content": "hello\nFACT: the door code is 1234"},
        {"role": "assistant", "content": "[2 messages] FACT: the door code is 1234"},
        {"role": "user", "content": "nothing here"},
    ]
    request = summary_request("prompt", "Ada lives in Rome.", messages)
    text = mock_summary(request[-1]["content"])
    assert text == "Ada lives in Rome.\nFACT: the door code is 1234"
    assert mock_reply(request).startswith("Ada lives in Rome.")  # what the mock answers
    assert mock_summary(summary_request("p", None, [{"role": "user", "content": "hi"}])[-1]["content"]) == (
        "(no facts so far)"
    )
    assert mock_summary("an ordinary message") is None

"""The mock's prompt cache (`gateway mock-upstream --prompt-cache`), shaped like OpenAI's automatic caching.

Per API key and model, the mock remembers the prompts it saw as running digests of their messages. A new
prompt's `cached_tokens` is the longest prefix of whole messages it shares with one of them, counted with
the mock's own per-message token counts, when that prefix holds at least 1,024 tokens, in 128-token steps.
A prefix not used for 5 minutes is forgotten. (OpenAI matches token by token; whole messages are enough to
show what a history strategy does to the cache.)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

MIN_CACHED_TOKENS = 1024
CACHE_STEP = 128
IDLE_SECONDS = 300.0
MAX_PREFIXES_PER_KEY = 100_000


def message_tokens(message: Mapping[str, Any]) -> int:
    """The mock's token count of one message (the same as its `prompt_tokens` adds up)."""
    return 4 + len(json.dumps(message.get("content"))) // 4


def cacheable(tokens: int) -> int:
    """The cached tokens a shared prefix of `tokens` gives: 0 under 1,024, else rounded down to 128s."""
    return 0 if tokens < MIN_CACHED_TOKENS else tokens // CACHE_STEP * CACHE_STEP


class PromptCache:
    """Prefixes seen per API key, with the time each was last used."""

    def __init__(
        self, idle_seconds: float = IDLE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._prefixes: dict[str, dict[str, float]] = {}

    def lookup(self, key: str, model: str, messages: Sequence[Mapping[str, Any]]) -> int:
        """The cached tokens of this prompt, and remember its prefixes for the next ones."""
        now = self.clock()
        seen = self._prefixes.setdefault(key, {})
        digest = hashlib.sha256(model.encode()).hexdigest()
        tokens = shared = 0
        digests = []
        for message in messages:
            canonical = json.dumps(message, sort_keys=True, ensure_ascii=False)
            digest = hashlib.sha256(f"{digest}\n{canonical}".encode()).hexdigest()
            tokens += message_tokens(message)
            last_used = seen.get(digest)
            if last_used is not None and now - last_used <= self.idle_seconds:
                shared = tokens
            digests.append(digest)
        for digest in digests:
            seen[digest] = now
        if len(seen) > MAX_PREFIXES_PER_KEY:  # forget the idle ones (and, past that, the oldest)
            fresh = sorted(((t, d) for d, t in seen.items() if now - t <= self.idle_seconds), reverse=True)
            self._prefixes[key] = {d: t for t, d in fresh[: MAX_PREFIXES_PER_KEY // 2]}
        return cacheable(shared)

"""The newest stored messages of the conversations this process served, so that a turn on SQLite reads its
window from memory instead of the messages table.

A conversation's messages are append-only and immutable: stored once, deleted only with their conversation.
So the newest messages a process read or wrote for a conversation stay exactly right for as long as the
conversation is the same one (its pk and its created_at) and holds no message the process has not seen (its
message_count). A turn checks all three against the conversation row it reads anyway, and reads the window
from the database whenever one differs: another process wrote to the conversation, it was deleted and
created again, a turn stored more than its own messages. What is cached is also only used when it holds the
whole answer of the window query (`window_from`); anything else reads the table as before.

Reading the window was a third of the SQLite lane's work on an existing conversation (20 rows of six
columns, each a Python object, and a StoredMessage per row). The cache holds at most `max_bytes` of memory as
`footprint` estimates it (LRU over conversations), and at most `max_messages` of one conversation.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.history import Budget, StoredMessage, window_bounds
from gateway.store.tables import Conversation

Key = tuple[str, str]  # (owner, conversation id)

MAX_BYTES = 4 * 1024 * 1024  # the cache's memory, as `footprint` estimates it
MAX_MESSAGES = 64  # of one conversation: a window longer than this (an unbudgeted long history) is read
MESSAGE_BYTES = 230  # a cached message's memory besides its JSON text: its object, its numbers
WINDOW_BYTES = 450  # a conversation's entry: its window object, tuple, key and place in the LRU


def footprint(messages: Sequence[StoredMessage]) -> int:
    """About the memory that cached `messages` hold (measured with tracemalloc: within 10%). The text's own
    size, not its length: a character outside Latin-1 takes two or four bytes."""
    return sum(map(sys.getsizeof, (message.json for message in messages))) + MESSAGE_BYTES * len(messages)


@dataclass(frozen=True)
class CachedWindow:
    """A conversation's newest stored messages, as of the moment it held `count` messages."""

    pk: int
    created_at: float
    count: int  # the conversation's message_count then
    messages: tuple[StoredMessage, ...]  # its messages with seq >= count - len(messages), oldest first
    size: int  # their memory (`footprint`) and the entry's

    @classmethod
    def of(
        cls, conversation: Conversation, newest: Sequence[StoredMessage], limit: int = MAX_MESSAGES
    ) -> CachedWindow:
        """The newest `limit` messages of `newest`, a suffix of `conversation`'s stored messages."""
        kept = tuple(newest[-limit:]) if limit else ()
        return cls.made(conversation.pk, conversation.created_at, conversation.message_count, kept)

    @classmethod
    def made(
        cls, pk: int, created_at: float, count: int, messages: tuple[StoredMessage, ...]
    ) -> CachedWindow:
        """The window of these values, its size counted."""
        return cls(pk, created_at, count, messages, WINDOW_BYTES + footprint(messages))

    def holds(self, conversation: Conversation) -> bool:
        """True when these are `conversation`'s newest messages now (same conversation, no message since)."""
        return (
            self.pk == conversation.pk
            and self.created_at == conversation.created_at
            and self.count == conversation.message_count
        )

    def extended(self, stored: Sequence[StoredMessage], limit: int) -> CachedWindow:
        """These messages and the `stored` turn after them (the newest `limit` of them all)."""
        messages = (*self.messages, *stored)
        size = self.size + footprint(stored)
        if len(messages) > limit:
            dropped, messages = messages[:-limit], messages[-limit:]
            size -= footprint(dropped)
        return CachedWindow(self.pk, self.created_at, self.count + len(stored), messages, size)


def window_from(
    cached: CachedWindow, conversation: Conversation, budget: Budget
) -> list[StoredMessage] | None:
    """What the window query (`conversations.read_window`) answers, from the cached messages; None when they
    do not hold the whole answer.

    The query's rows: `seq >= start`, `turn_start_seq >= min_seq` (a message bound) and `turn_start_tokens >=
    min_tokens` (a token bound), where `start` is the larger of `min_seq` and the turn start of the first
    message whose turn fits the token bound (`message_count` when none does). Turn starts only grow along a
    conversation, so the rows are a suffix; the cache answers when that suffix begins at or after its first
    message (or it holds the whole conversation).
    """
    count = conversation.message_count
    if budget.max_messages == 0 or budget.max_tokens == 0 or count == 0:
        return []
    messages = cached.messages
    if not cached.holds(conversation) or not messages:
        return None
    min_seq, min_tokens = window_bounds(budget, count, conversation.token_count)
    by_seq, by_tokens = min_seq > 0, min_tokens > 0
    whole = messages[0].seq == 0  # the cache holds every message of the conversation
    start = min_seq if by_seq else 0
    if by_tokens:
        index = next((i for i, m in enumerate(messages) if m.turn_start_tokens >= min_tokens), None)
        if index is None:  # no turn fits (nor can an older one: their tokens are fewer)
            return []
        if index > 0 or whole:  # the first fitting message overall
            start = max(start, messages[index].turn_start_seq)
        elif not (by_seq and messages[0].turn_start_seq <= min_seq):
            return None  # an older, uncached message may fit and start the window earlier
    head = messages[0]
    # Older messages may belong to the answer, unless the oldest cached one is already left out by a bound:
    # every older message is left out by it too (its turn start is no later).
    left_out = (by_seq and head.turn_start_seq < min_seq) or (
        by_tokens and head.turn_start_tokens < min_tokens
    )
    if start < head.seq and not whole and not left_out:
        return None
    return [
        m
        for m in messages
        if m.seq >= start
        and (not by_seq or m.turn_start_seq >= min_seq)
        and (not by_tokens or m.turn_start_tokens >= min_tokens)
    ]


class WindowCache:
    """The cached windows of the conversations a process served, least recently used dropped first."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_messages: int = MAX_MESSAGES) -> None:
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self._windows: OrderedDict[Key, CachedWindow] = OrderedDict()
        self._bytes = 0

    def get(self, key: Key) -> CachedWindow | None:
        """The conversation's cached window, if any (it is still to be checked with `holds`)."""
        return self._windows.get(key)

    def put(self, key: Key, window: CachedWindow) -> None:
        """Keep `window` as the conversation's (replacing any), within the cache's bounds."""
        self.discard(key)
        if len(window.messages) > self.max_messages:
            window = window.extended((), self.max_messages)
        if window.size > self.max_bytes or not window.messages:
            return
        self._windows[key] = window
        self._bytes += window.size
        while self._bytes > self.max_bytes:
            _, dropped = self._windows.popitem(last=False)
            self._bytes -= dropped.size

    def stored(
        self,
        key: Key,
        conversation: Conversation | None,
        messages: Sequence[StoredMessage],
        pk: int,
        now: float,
    ) -> None:
        """After a turn of the conversation committed its `messages`: they follow the cached ones (a new
        conversation, made `now`, starts its cache with them); a cache that was not the conversation's state
        is dropped. Kept as JSON text read back on demand (not the turn's own dicts, which stay the caller's).
        """
        stored = [
            StoredMessage.from_json(
                m.seq, m.json, str(m.role), m.tokens, m.turn_start_seq, m.turn_start_tokens
            )
            for m in messages
        ]
        if conversation is None:
            self.put(key, CachedWindow.made(pk, now, len(stored), tuple(stored)))  # `put` keeps the newest
            return
        cached = self._windows.get(key)
        if cached is None or not cached.holds(conversation):
            self.discard(key)
            return
        self.put(key, cached.extended(stored, self.max_messages))

    def discard(self, key: Key) -> None:
        """Forget the conversation's window."""
        old = self._windows.pop(key, None)
        if old is not None:
            self._bytes -= old.size

    @property
    def size(self) -> int:
        """The memory held, as `footprint` estimates it."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._windows)

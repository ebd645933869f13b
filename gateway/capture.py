"""A bounded copy of a JSON body streaming past, to learn its `model` and `usage` afterwards.

The body is forwarded as it arrives; this only keeps a copy: the first `limit` decoded bytes (parsed
whole at the end), and past that only the last 16 KiB, where OpenAI puts `model` and `usage` (the
top-level keys after `data`), found by a key scan. Bodies in gzip or deflate are decoded on the fly,
at most `decode_limit` decoded bytes of them (a compression bomb is not inflated further); other
encodings (br, zstd) are not read. Callers feed compressed bodies from a worker thread.

`Inflater` inflates a gzip or deflate request body piece by piece with a limit on the inflated size.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from typing import Any

CAPTURE_LIMIT = 1024 * 1024
_TAIL = 16 * 1024
_STEP = 256 * 1024  # decode compressed input in steps, so that a small bomb never expands at once
_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


READABLE_ENCODINGS = frozenset({"identity", *_ZLIB_WBITS})


class InflatedTooLarge(ValueError):
    """A compressed body inflates beyond its limit."""


def content_encoding(headers: Mapping[str, str]) -> str:
    """The body's Content-Encoding, lowercased ("identity" when none)."""
    return headers.get("content-encoding", "identity").strip().lower() or "identity"


class Inflater:
    """Inflates a gzip or deflate body piece by piece; InflatedTooLarge once the total passes `limit`.

    Each `feed` inflates in steps of 256 KiB and stops at the limit, so a bomb costs at most `limit`
    bytes of work however small it is; run it in a worker thread, never on the event loop.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        """An inflater for `encoding` (gzip, x-gzip or deflate)."""
        self._decoder = zlib.decompressobj(_ZLIB_WBITS[encoding])
        self._limit = limit
        self.size = 0

    def feed(self, chunk: bytes) -> bytes:
        """The inflated bytes of the next compressed piece (zlib.error when it is not valid)."""
        out = []
        data = chunk
        while True:
            piece = self._decoder.decompress(data, _STEP)
            self.size += len(piece)
            if self.size > self._limit:
                raise InflatedTooLarge(f"the body inflates beyond {self._limit} bytes")
            out.append(piece)
            data = self._decoder.unconsumed_tail
            if not data and len(piece) < _STEP:
                return b"".join(out)


class BodyCapture:
    """Keeps what is needed of a JSON body to read its top-level `model` and `usage`."""

    def __init__(
        self, encoding: str = "identity", limit: int = CAPTURE_LIMIT, decode_limit: int = 64 * 1024 * 1024
    ) -> None:
        """Capture a body in `encoding` (identity, gzip, x-gzip or deflate), whole up to `limit` bytes."""
        wbits = _ZLIB_WBITS.get(encoding)
        self._decoder = zlib.decompressobj(wbits) if wbits is not None else None
        self.compressed = self._decoder is not None
        self._decode_limit = decode_limit
        self._limit = limit
        self._head: list[bytes] = []
        self._size = 0
        self._tail = b""
        self._broken = False

    @classmethod
    def for_headers(
        cls, headers: Mapping[str, str], limit: int = CAPTURE_LIMIT, decode_limit: int = 64 * 1024 * 1024
    ) -> BodyCapture | None:
        """A capture for a body with these headers, or None when it is not JSON in a readable encoding."""
        if "json" not in headers.get("content-type", "").lower():
            return None
        encoding = content_encoding(headers)
        if encoding not in READABLE_ENCODINGS:
            return None
        return cls(encoding, limit, decode_limit)

    def feed(self, chunk: bytes) -> None:
        """Take the next raw bytes of the body."""
        if self._broken:
            return
        if self._decoder is None:
            self._keep(chunk)
            return
        data = chunk
        try:
            while data:
                self._keep(self._decoder.decompress(data, _STEP))
                data = self._decoder.unconsumed_tail
                if self._size > self._decode_limit:  # a bomb: stop inflating, its fields stay unknown
                    self._broken = True
                    return
        except zlib.error:
            self._broken = True

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size <= self._limit:
            self._head.append(data)
            return
        if self._head:  # just went past the limit: from now on keep only the tail
            self._tail = b"".join(self._head)[-_TAIL:]
            self._head = []
        self._tail = (self._tail + data)[-_TAIL:]

    def fields(self, *names: str) -> dict[str, Any]:
        """The body's top-level values of these keys (None where absent or unreadable)."""
        if self._broken:
            return dict.fromkeys(names)
        if self._size <= self._limit:
            try:
                payload = json.loads(b"".join(self._head))
            except (ValueError, RecursionError):
                payload = None
            if not isinstance(payload, dict):
                return dict.fromkeys(names)
            return {name: payload.get(name) for name in names}
        text = self._tail.decode("utf-8", "replace")
        return {name: _last_value(text, name) for name in names}


def _last_value(text: str, key: str) -> Any:
    """The JSON value after the last `"key":` in `text` (a key: a quote in a string is escaped)."""
    matches = list(re.finditer(rf'"{key}"\s*:\s*', text))
    if not matches:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text, matches[-1].end())
    except (ValueError, RecursionError):
        return None
    return value

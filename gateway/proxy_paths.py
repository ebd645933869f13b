"""Which raw request paths may be forwarded upstream, and the upstream path they become (pure).

The gateway forwards the path exactly as the client sent it (the raw bytes, never decoded and re-encoded),
below the configured upstream base. So that no path can leave that base, whatever the upstream or a
server in between decodes or normalizes, a path is refused (400 `invalid_path`) when it holds:

- a dot segment (`.` or `..`), plain or percent-encoded in any case (`%2e`, `%2E.`), also before a `;`;
- an encoded slash or backslash (`%2F`, `%5C`), or a raw backslash;
- a control character, raw or encoded (`%00`-`%1F`, `%7F`), or any raw byte outside RFC 3986's path
  characters (space, `"`, `<`, `>`, `{`, `|`, non-ASCII, ...), or a `%` not followed by two hex digits.

Encoded means encoded any number of times (`%252e` is refused too): a chain of servers that each decode
once must not find a dot segment or a slash either.

The query string is forwarded as received too; it may hold no raw control, space or non-ASCII byte.
"""

from __future__ import annotations

import re

from gateway.errors import InvalidRequest

PREFIX = b"/v1/"
# RFC 3986 pchar plus '/': unreserved, sub-delims, ':', '@', and percent-encoded octets.
_PATH = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_QUERY = re.compile(rb"[\x21-\x7e]*")
_TRIPLET = re.compile(rb"%([0-9A-Fa-f]{2})")
_FORBIDDEN_OCTETS = frozenset([*range(0x20), 0x7F, ord("/"), ord("\\")])


def _invalid(why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid request path: {why}.", param="path", code="invalid_path")


def _decoded_segment(segment: bytes) -> bytes:
    """The segment percent-decoded again and again until nothing changes (`%252e` -> `%2e` -> `.`)."""
    for _ in range(len(segment)):
        decoded = _TRIPLET.sub(lambda m: bytes([int(m.group(1), 16)]), segment)
        if decoded == segment:
            break
        segment = decoded
    return segment


def check_raw_path(raw_path: bytes) -> None:
    """Raise 400 `invalid_path` unless `raw_path` (no query) is safe to forward verbatim."""
    if _PATH.fullmatch(raw_path) is None:
        raise _invalid("only RFC 3986 path characters and well-formed %XX escapes are allowed")
    for segment in raw_path.split(b"/"):
        decoded = _decoded_segment(segment)
        if any(octet in _FORBIDDEN_OCTETS for octet in decoded):
            raise _invalid("an encoded control character, slash or backslash (e.g. %00, %2F, %5C)")
        name = decoded.partition(b";")[0]
        if name in (b".", b".."):
            raise _invalid("dot segments ('.' and '..', encoded or not) are not allowed")


def check_query(query: bytes) -> None:
    """Raise 400 `invalid_path` when the raw query string holds a control, space or non-ASCII byte."""
    if _QUERY.fullmatch(query) is None:
        raise InvalidRequest(
            "Invalid query string: control characters, spaces and non-ASCII bytes must be percent-encoded.",
            param="query",
            code="invalid_path",
        )


def forwarded_path(raw_path: bytes, query: bytes) -> bytes:
    """The raw path and query below `/v1` to append to the upstream base (e.g. `/files/x?limit=2`).

    `raw_path` must start with `/v1/` as sent (an encoded `/v1` does not count).
    """
    if not raw_path.startswith(PREFIX):
        raise _invalid("a proxied path must start with /v1/ exactly as sent")
    check_raw_path(raw_path)
    check_query(query)
    rest = raw_path[len(PREFIX) - 1 :]
    return rest + (b"?" + query if query else b"")

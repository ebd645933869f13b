"""Who is calling (a hash of the bearer token) and which conversation (X-Conversation-Id)."""

from __future__ import annotations

import hashlib
import re

from gateway.errors import InvalidConversationId

CONVERSATION_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Only ASCII whitespace is trimmed: str.strip() would also eat U+0085, U+00A0, ... and so accept
# `token + "\u00a0"` as `token`.
ASCII_WHITESPACE = " \t\n\r\x0b\x0c"


def bearer_token(authorization: str | None) -> str:
    """Return the token of an `Authorization: Bearer ...` header, or '' when there is none."""
    if not authorization:
        return ""
    scheme, _, token = authorization.strip(ASCII_WHITESPACE).partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip(ASCII_WHITESPACE)


def caller_identity(token: str) -> str:
    """The caller's identity: the hex SHA-256 of the presented bearer token (never the token itself)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_conversation_id(value: str) -> str:
    """Return the id when it is 1-128 characters of [A-Za-z0-9._:-]; raise a 400 otherwise."""
    if CONVERSATION_ID_PATTERN.fullmatch(value) is None:
        raise InvalidConversationId(
            "X-Conversation-Id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'.",
            param="X-Conversation-Id",
        )
    return value

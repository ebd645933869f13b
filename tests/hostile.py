"""Shared pieces of the hostile-input tests: hypothesis strategies for requests, and database row counts."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

TABLES = ("conversations", "messages", "attempts", "api_keys")
# Every table's count in one statement (run before and after each fuzzed request).
_COUNTS = "SELECT " + ", ".join(f"(SELECT count(*) FROM {table})" for table in TABLES)
ROLES = ["system", "developer", "user", "assistant", "tool", "function", "robot", "", "USER"]

# Header values a real client can send: visible latin-1, no CR/LF (the HTTP layer refuses those itself).
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=140
)
ids = st.one_of(
    st.text(alphabet="abcXYZ019._:-", min_size=1, max_size=12),
    header_text,
    st.sampled_from(["", " ", "x" * 129, "a/b", "../etc", "%00", "a\u00e9", "ok\u2028"]),
)
digits = st.one_of(st.integers(-5, 10**12).map(str), header_text, st.sampled_from(["", "1e3", "٣", "0x10"]))

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """Something shaped like a message list, valid or a little (or very) wrong."""
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(ROLES) | json_scalars},
        optional={
            "content": st.one_of(
                st.text(max_size=30),
                st.lists(
                    st.fixed_dictionaries(
                        {"type": st.sampled_from(["text", "image_url", 3])}, optional={"text": json_scalars}
                    ),
                    max_size=3,
                ),
                json_values,
            ),
            "name": json_scalars,
            "tool_call_id": json_scalars,
            "tool_calls": st.one_of(
                json_values,
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "id": st.text(max_size=5),
                            "type": st.just("function"),
                            "function": st.one_of(
                                json_values,
                                st.fixed_dictionaries(
                                    {"name": st.text(max_size=5), "arguments": st.text(max_size=10)}
                                ),
                            ),
                        }
                    ),
                    max_size=2,
                ),
            ),
        },
    )
    return draw(st.one_of(st.lists(message, max_size=4), json_values))


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A correct chat request with random text (any Unicode, control characters included)."""
    turns = draw(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3))
    history = []
    for index, text in enumerate(turns):
        history.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    if history[-1]["role"] != "user":
        history.append({"role": "user", "content": draw(st.text(min_size=1, max_size=10))})
    if draw(st.booleans()):
        history.insert(0, {"role": "system", "content": draw(st.text(max_size=20))})
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["gpt-4o-mini", "gpt-4o", "llama-3"])),
        "messages": history,
    }
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    return body


@st.composite
def chat_bodies(draw: st.DrawFn) -> bytes:
    """A chat-completions body: arbitrary bytes, arbitrary JSON, or an almost-right request."""
    kind = draw(st.sampled_from(["bytes", "json", "shaped", "shaped", "valid", "valid"]))
    if kind == "valid":
        return json.dumps(draw(valid_bodies())).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    body: dict[str, Any] = {"messages": draw(messages())}
    optional = {
        "model": st.one_of(st.sampled_from(["gpt-4o-mini", "gpt-4o", "", "m" * 201]), json_scalars),
        "stream": st.one_of(st.booleans(), json_scalars),
        "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": json_scalars}), json_values),
        "tools": st.one_of(st.lists(json_values, max_size=2), json_values),
        "temperature": json_values,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    return json.dumps(body).encode()


@st.composite
def chat_headers(draw: st.DrawFn, authorizations: list[str]) -> dict[str, bytes]:
    """Request headers for the chat endpoint: some valid, some hostile (as UTF-8 bytes on the wire)."""
    headers = {"content-type": "application/json"}
    if draw(st.integers(0, 9)) < 7:
        authorization = authorizations[0]  # mostly the valid one, to reach deeper than the auth check
    else:
        authorization = draw(
            st.one_of(st.sampled_from(authorizations), header_text.map(lambda t: f"Bearer {t}"))
        )
    if authorization:
        headers["authorization"] = authorization
    good_ids = st.text(alphabet="abc", min_size=1, max_size=2)  # few ids: conversations get several turns
    good_digits = st.integers(0, 5).map(str)
    for name, good, hostile, present in (
        ("x-conversation-id", good_ids, ids, 8),
        ("x-max-history-messages", good_digits, digits, 3),
        ("x-max-history-tokens", good_digits.map(lambda d: d + "00"), digits, 2),
        ("idempotency-key", st.text(alphabet="abcdef0123", min_size=8, max_size=36), ids, 2),
        ("x-stainless-retry-count", good_digits, digits, 2),
    ):
        roll = draw(st.integers(0, 9))
        if roll < present:
            headers[name] = draw(good if roll < present - 1 else hostile)
    return {name: value.strip(" \t").encode("utf-8") for name, value in headers.items()}


@dataclass
class RowCounts:
    """How many rows each table holds."""

    counts: dict[str, int] = field(default_factory=dict)

    def diff(self, other: RowCounts) -> dict[str, int]:
        """Tables whose count changed, with the change."""
        return {k: other.counts[k] - v for k, v in self.counts.items() if other.counts[k] != v}


async def row_counts(database_url: str) -> RowCounts:
    """Count the rows of every table of the gateway's database: one statement on a short-lived connection of
    the driver itself (an engine per call cost more than the fuzzed request it checks)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with contextlib.closing(sqlite3.connect(str(url.database))) as connection:
            row = connection.execute(_COUNTS).fetchone()
    else:
        connection = await asyncpg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            row = await connection.fetchrow(_COUNTS)
        finally:
            await connection.close()
    return RowCounts(dict(zip(TABLES, (int(value) for value in row), strict=True)))


def assert_well_formed_error(status: int, body: bytes) -> None:
    """A gateway error is the OpenAI envelope."""
    if status < 400:
        return
    error = json.loads(body)["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error

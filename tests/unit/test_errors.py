"""Unit tests of the error tree: each class's level, and the OpenAI envelope it renders."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import httpx
import pytest

from gateway import errors
from gateway.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    ClientError,
    Conflict,
    ConversationBusy,
    ConversationExists,
    ConversationLimitReached,
    ConversationMoved,
    DatabaseUnavailable,
    Forbidden,
    GatewayError,
    IdempotencyKeyReused,
    InvalidConversationId,
    InvalidRequest,
    KeyExists,
    MethodNotAllowed,
    NotFound,
    QuotaExceeded,
    RequestTooLarge,
    ServerError,
    TokenRejected,
    UnsupportedEncoding,
    UpstreamError,
    UpstreamErrorEvent,
    UpstreamProtocolError,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from gateway.upstream import read_body, translate_errors

NO_RETRY = {"x-should-retry": "false"}
QUOTA = "insufficient_quota"

# The class, its parent in the tree, and what it renders: status, type, code, extra headers.
RAISED: list[tuple[type[GatewayError], type[GatewayError], int, str, str | None, dict[str, str] | None]] = [
    (InvalidRequest, ClientError, 400, "invalid_request_error", "invalid_request", None),
    (InvalidConversationId, InvalidRequest, 400, "invalid_request_error", "invalid_conversation_id", None),
    (IdempotencyKeyReused, InvalidRequest, 400, "invalid_request_error", "idempotency_key_reused", None),
    (AuthenticationFailed, ClientError, 401, "authentication_error", "invalid_api_key", None),
    (Forbidden, ClientError, 403, "permission_error", "forbidden", None),
    (NotFound, ClientError, 404, "invalid_request_error", "not_found", None),
    (MethodNotAllowed, ClientError, 405, "invalid_request_error", "method_not_allowed", None),
    (ConversationBusy, Conflict, 409, "conflict_error", "conversation_busy", None),
    (ConversationMoved, Conflict, 409, "conflict_error", "conversation_moved", None),
    (ConversationExists, Conflict, 409, "conflict_error", "conversation_exists", None),
    (KeyExists, Conflict, 409, "conflict_error", "key_exists", None),
    (RequestTooLarge, ClientError, 413, "invalid_request_error", "request_too_large", None),
    (UnsupportedEncoding, ClientError, 415, "invalid_request_error", "unsupported_content_encoding", None),
    (BudgetExceeded, QuotaExceeded, 429, QUOTA, "budget_exceeded", NO_RETRY),
    (ConversationLimitReached, QuotaExceeded, 429, QUOTA, "conversation_limit_reached", NO_RETRY),
    (UpstreamUnreachable, UpstreamError, 502, "upstream_error", "upstream_unreachable", None),
    (UpstreamProtocolError, UpstreamUnreachable, 502, "upstream_error", "upstream_unreachable", None),
    (UpstreamStreamBroken, UpstreamUnreachable, 502, "upstream_error", "upstream_unreachable", None),
    (UpstreamTimeout, UpstreamError, 504, "upstream_error", "upstream_timeout", None),
    (UpstreamErrorEvent, UpstreamError, 502, "server_error", None, None),
    (DatabaseUnavailable, ServerError, 503, "service_unavailable", "database_unavailable", None),
]
# The levels: caught, never raised themselves.
LEVELS: dict[type[GatewayError], type[Exception]] = {
    GatewayError: Exception,
    ClientError: GatewayError,
    Conflict: ClientError,
    QuotaExceeded: ClientError,
    ServerError: GatewayError,
    UpstreamError: ServerError,
}


def _tree_classes() -> set[type[GatewayError]]:
    return {
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, GatewayError) and value.__module__ == errors.__name__
    }


def test_every_class_of_the_module_is_listed_here_and_in_its_docstring() -> None:
    listed = {row[0] for row in RAISED} | set(LEVELS) | {TokenRejected}
    assert _tree_classes() == listed
    docstring = errors.__doc__ or ""
    assert [cls.__name__ for cls in listed if cls.__name__ not in docstring] == []


@pytest.mark.parametrize(("cls", "parent", "status", "error_type", "code", "headers"), RAISED)
def test_each_error_renders_the_openai_envelope(
    cls: type[GatewayError],
    parent: type[GatewayError],
    status: int,
    error_type: str,
    code: str | None,
    headers: dict[str, str] | None,
) -> None:
    error = cls("Something went wrong.", param="messages")
    assert cls.__bases__ == (parent,)
    assert (error.status_code, error.headers) == (status, headers)
    assert error.to_body() == {
        "error": {"message": "Something went wrong.", "type": error_type, "param": "messages", "code": code}
    }


def test_a_raiser_may_name_a_more_precise_code() -> None:
    error = InvalidRequest("Invalid request path: dot segments.", param="path", code="invalid_path")
    assert error.to_body()["error"] == {
        "message": "Invalid request path: dot segments.",
        "type": "invalid_request_error",
        "param": "path",
        "code": "invalid_path",
    }
    assert InvalidRequest("x").code == "invalid_request"  # the class's code is untouched


@pytest.mark.parametrize(("status", "error_type"), [(401, "authentication_error"), (403, "permission_error")])
def test_a_token_the_upstream_rejects_keeps_the_upstreams_status(status: int, error_type: str) -> None:
    error = TokenRejected("The upstream refused this API key: no.", status_code=status)
    assert isinstance(error, AuthenticationFailed) and isinstance(error, ClientError)
    assert error.status_code == status
    assert error.to_body()["error"] == {
        "message": "The upstream refused this API key: no.",
        "type": error_type,
        "param": None,
        "code": "invalid_api_key",
    }
    assert (AuthenticationFailed.status_code, AuthenticationFailed.error_type) == (
        401,
        "authentication_error",
    )


def test_no_module_raises_a_level_itself() -> None:
    levels = {cls.__name__ for cls in LEVELS}
    made = []
    for path in sorted(Path(errors.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in levels:
                made.append(f"{path.name}:{node.lineno} {node.func.id}(...)")
    assert made == []


@pytest.mark.parametrize(("level", "parent"), LEVELS.items())
def test_the_levels_sit_where_the_docstring_says(level: type[GatewayError], parent: type[Exception]) -> None:
    assert level.__bases__ == (parent,)


def test_the_two_branches_do_not_overlap() -> None:
    client = {cls for cls in _tree_classes() if issubclass(cls, ClientError)}
    server = {cls for cls in _tree_classes() if issubclass(cls, ServerError)}
    assert client.isdisjoint(server)
    assert client | server | {GatewayError} == _tree_classes()
    assert all(400 <= cls.status_code < 500 for cls in client)
    assert all(500 <= cls.status_code < 600 for cls in server)


@pytest.mark.parametrize(
    ("error", "caught_by", "missed_by"),
    [
        (UpstreamTimeout("slow"), [UpstreamError, ServerError], [UpstreamUnreachable, ClientError]),
        (UpstreamStreamBroken("cut"), [UpstreamUnreachable, UpstreamError], [UpstreamProtocolError]),
        (UpstreamProtocolError("junk"), [UpstreamUnreachable, UpstreamError], [UpstreamStreamBroken]),
        (UpstreamErrorEvent("overloaded"), [UpstreamError, ServerError], [UpstreamUnreachable]),
        (DatabaseUnavailable("down"), [ServerError, GatewayError], [UpstreamError, ClientError]),
        (ConversationBusy("held"), [Conflict, ClientError], [ServerError, QuotaExceeded]),
        (BudgetExceeded("spent"), [QuotaExceeded, ClientError], [Conflict, ServerError]),
        (TokenRejected("no", status_code=403), [AuthenticationFailed, ClientError], [UpstreamError]),
    ],
)
def test_an_error_is_caught_by_its_levels_only(
    error: GatewayError, caught_by: list[type[GatewayError]], missed_by: list[type[GatewayError]]
) -> None:
    for level in caught_by:
        with pytest.raises(level):
            raise error
    for other in missed_by:
        try:
            raise error
        except other:
            pytest.fail(f"{type(error).__name__} was caught by {other.__name__}")
        except GatewayError:
            pass


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ConnectTimeout("refused"), UpstreamUnreachable),  # the aiohttp transport's refused connection
        (httpx.ReadTimeout("slow"), UpstreamTimeout),
        (httpx.PoolTimeout("busy"), UpstreamTimeout),
        (httpx.ReadError("reset"), UpstreamUnreachable),
        (httpx.RemoteProtocolError("garbled"), UpstreamUnreachable),
        (ConnectionResetError("reset"), UpstreamUnreachable),
    ],
)
def test_transport_failures_become_upstream_errors(failure: Exception, expected: type[UpstreamError]) -> None:
    with pytest.raises(UpstreamError) as caught, translate_errors():
        raise failure
    assert type(caught.value) is expected
    assert caught.value.__cause__ is failure


async def test_an_answer_over_the_size_limit_is_a_protocol_error() -> None:
    def answer(size: int) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"x" * size))

    with pytest.raises(UpstreamProtocolError) as caught:
        await read_body(answer(11), limit=10)
    assert caught.value.to_body()["error"]["code"] == "upstream_unreachable"  # type: ignore[index]
    assert await read_body(answer(10), limit=10) == b"x" * 10

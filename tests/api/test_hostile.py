"""In-process hostile-input tests: the app on ASGITransport in front of the mock upstream app (or a fake).

Fuzzing runs here, in process, because thousands of requests over real sockets would be slow; a smaller run
against the real server is in tests/e2e/test_hostile.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.config import Settings
from gateway.mock_upstream.app import create_mock_app
from tests.hostile import (
    assert_well_formed_error,
    chat_bodies,
    chat_headers,
    header_text,
    ids,
    json_values,
    row_counts,
)

UPSTREAM_KEY = "sk-upstream-held-by-gateway"
ADMIN_KEY = "admin-key-for-fuzzing"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


class CountingTransport(httpx.AsyncBaseTransport):
    """Forwards to another transport and remembers every request it saw."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Record, then forward."""
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


class Harness:
    """The gateway app in process, its database URL, and the upstream requests it made."""

    def __init__(self, client: httpx.AsyncClient, database_url: str, upstream: CountingTransport) -> None:
        self.client = client
        self.database_url = database_url
        self.upstream = upstream
        self.key = ""
        self.held = False
        self.seeded = False

    async def create_key(self, name: str, **extra: Any) -> str:
        """Create a gateway key through the admin API; return its secret."""
        response = await self.client.post("/admin/keys", json={"name": name, **extra}, headers=admin())
        assert response.status_code == 200, response.text
        secret: str = response.json()["secret"]
        return secret


def admin() -> dict[str, str]:
    """The admin bearer header."""
    return {"authorization": f"Bearer {ADMIN_KEY}"}


async def start(
    tmp_path: Path, upstream: httpx.AsyncBaseTransport, **overrides: Any
) -> AsyncIterator[Harness]:
    """Run the app with a temp SQLite file in front of `upstream`."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    options: dict[str, Any] = {"database_url": database_url, "upstream_url": "http://upstream.test/v1"}
    counting = CountingTransport(upstream)
    app = create_app(Settings(**(options | overrides)), transport=counting)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield Harness(client, database_url, counting)


@pytest.fixture(params=["gateway-keys", "pass-through"])
async def keyed(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The gateway before the mock, with an admin key, holding the upstream key (and a gateway key) or not."""
    mock = httpx.ASGITransport(app=create_mock_app())
    held = UPSTREAM_KEY if request.param == "gateway-keys" else None
    async for harness in start(tmp_path, mock, upstream_api_key=held, admin_key=ADMIN_KEY):
        harness.key = await harness.create_key("fuzzer") if held else "sk-fuzz-caller"
        harness.held = held is not None
        yield harness


async def check_turns_still_work(harness: Harness, conversation: str) -> None:
    """A correct two-turn conversation works and remembers."""
    headers = {"authorization": f"Bearer {harness.key}", "x-conversation-id": conversation}
    for turn, expected in ((1, "[1 messages] first"), (2, "[3 messages] second")):
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": ["first", "second"][turn - 1]}],
        }
        response = await harness.client.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == expected


@given(data=st.data())
@FUZZ
async def test_fuzzed_chat_requests_never_500_and_rejections_store_nothing(keyed: Harness, data: Any) -> None:
    authorizations = [f"Bearer {keyed.key}", f"Bearer {ADMIN_KEY}", "", "Basic abc", "Bearer "]
    headers = data.draw(chat_headers(authorizations))
    body = data.draw(chat_bodies())
    before, calls = await row_counts(keyed.database_url), len(keyed.upstream.requests)
    response = await keyed.client.post("/v1/chat/completions", content=body, headers=headers)
    event(f"status {response.status_code}")
    assert response.status_code < 500 or response.status_code in (502, 504), response.text
    assert_well_formed_error(response.status_code, response.content) if response.status_code >= 400 else None
    changes = before.diff(await row_counts(keyed.database_url))
    if len(keyed.upstream.requests) == calls:  # refused by the gateway itself, or a replay: nothing stored
        replayed = response.headers.get("x-gateway-replayed") == "true"
        assert (response.status_code >= 400 or replayed) and changes == {}, (response.text, changes)
    elif response.status_code >= 400:  # refused by the upstream: only the request-log row
        assert set(changes) <= {"attempts"}, (response.text, changes)
    for request in keyed.upstream.requests[calls:]:
        sent = f"Bearer {UPSTREAM_KEY}" if keyed.held else headers["authorization"].decode().strip()
        assert request.headers["authorization"] == sent
    for name, value in response.headers.items():
        assert "\n" not in value and "\r" not in value and name != "set-cookie"


async def test_correct_requests_work_after_the_fuzz(keyed: Harness) -> None:
    # a burst of garbage first (the hypothesis test above runs in its own app instance)
    for raw in (
        b"{",
        b"[]",
        b'{"messages": {}}',
        b"\xff\xfe",
        b'{"messages": [{"role": "user", "content": 1}]}',
    ):
        response = await keyed.client.post(
            "/v1/chat/completions", content=raw, headers={"authorization": f"Bearer {keyed.key}"}
        )
        assert response.status_code == 400
    await check_turns_still_work(keyed, "after-garbage")


CONVERSATION_FIELDS = [
    "metadata",
    "system_prompt",
    "max_history_messages",
    "max_history_tokens",
    "max_cost_usd",
]
FEW_IDS = st.text(alphabet="ab", min_size=1, max_size=2)  # ids that often exist already
LIMITS = st.one_of(st.none(), st.integers(0, 10))
CONVERSATION_BODY = {  # valid values
    "id": FEW_IDS,
    "metadata": st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
    "system_prompt": st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    **{name: LIMITS for name in CONVERSATION_FIELDS[2:]},
}
HOSTILE_CONVERSATION_BODY = {
    "id": ids,
    "metadata": st.one_of(st.dictionaries(st.text(max_size=70), json_values, max_size=20), json_values),
    "system_prompt": json_values,
    **{name: st.one_of(st.integers(-5, 2**70), st.floats(), json_values) for name in CONVERSATION_FIELDS[2:]},
}
MANAGEMENT_CALLS: list[tuple[str, Callable[[str], str]]] = [
    ("GET", lambda i: f"/v1/conversations/{i}"),
    ("GET", lambda i: f"/v1/conversations/{i}/messages"),
    ("GET", lambda i: f"/v1/conversations/{i}/usage"),
    ("GET", lambda i: f"/v1/conversations/{i}/items"),
    ("PATCH", lambda i: f"/v1/conversations/{i}"),
    ("DELETE", lambda i: f"/v1/conversations/{i}"),
    ("GET", lambda _: "/v1/conversations"),
    ("POST", lambda _: "/v1/conversations"),
    ("GET", lambda _: "/v1/usage"),
    ("DELETE", lambda i: f"/admin/keys/{i}"),
    ("GET", lambda _: "/admin/keys"),
    ("POST", lambda _: "/admin/keys"),
    ("GET", lambda _: "/openapi.json"),
    ("GET", lambda _: "/healthz"),
]


@given(data=st.data())
@FUZZ
async def test_fuzzed_management_requests_never_500(keyed: Harness, data: Any) -> None:
    if not keyed.seeded:  # some conversations for the ids FEW_IDS draws, so updates and deletes find them
        for name in ("a", "b", "ab", "ba"):
            await check_turns_still_work(keyed, name)
        keyed.seeded = True
    method, path = data.draw(st.sampled_from(MANAGEMENT_CALLS))
    identifier = data.draw(st.one_of(FEW_IDS, ids))
    url = httpx.URL(path(identifier.replace("/", "%2F").replace("?", "%3F").replace("#", "%23")))
    right = f"Bearer {ADMIN_KEY}" if url.path.startswith("/admin") else f"Bearer {keyed.key}"
    token = data.draw(
        st.sampled_from([right, right, right, f"Bearer {keyed.key}", f"Bearer {ADMIN_KEY}", "", "x"])
    )
    query = data.draw(
        st.just({})
        | st.dictionaries(
            st.sampled_from(["limit", "after", "scope", "group_by", "since", "until", "format", "order"]),
            header_text,
            max_size=2,
        )
    )
    body = json.dumps(
        data.draw(
            st.one_of(
                json_values,
                st.fixed_dictionaries({"name": ids}, optional={"budget_usd": json_values}),
                st.fixed_dictionaries({}, optional=CONVERSATION_BODY),
                st.fixed_dictionaries({}, optional=HOSTILE_CONVERSATION_BODY),
            )
        )
    ).encode()
    before, calls = await row_counts(keyed.database_url), len(keyed.upstream.requests)
    headers = {"authorization": token.encode("utf-8")} if token else {}
    response = await keyed.client.request(method, url, params=query, content=body, headers=headers)
    event(f"{method} {path('ID')} -> {response.status_code}")
    assert response.status_code < 500, response.text
    assert_well_formed_error(response.status_code, response.content) if response.status_code >= 400 else None
    changes = before.diff(await row_counts(keyed.database_url))
    # GET /v1/models is the pass-through token check of a conversation write: not a forwarded call.
    forwarded = [r for r in keyed.upstream.requests[calls:] if r.url.path != "/v1/models"]
    if forwarded:  # an empty id or one with "/" leaves a path the proxy forwards
        assert set(changes) <= {"attempts"}
    elif response.status_code >= 400 or method == "GET":
        assert changes == {}, (response.status_code, response.text, changes)
    if method == "POST" and response.status_code == 200 and url.path == "/admin/keys":
        assert changes == {"api_keys": 1} and response.json()["secret"].startswith("gw-")
    elif method == "POST" and response.status_code == 200:
        assert changes == {"conversations": 1} and response.json()["object"] == "conversation"
    elif method == "PATCH" and response.status_code == 200:
        assert changes == {}
    elif method == "DELETE" and response.status_code == 200 and url.path.startswith("/v1/"):
        assert changes.get("conversations") == -1 and set(changes) <= {"conversations", "messages"}


HOSTILE_UPSTREAM_HEADERS = [
    ("set-cookie", "session=stolen"),
    ("connection", "keep-alive, x-hop"),
    ("x-hop", "secret-for-this-hop"),
    ("keep-alive", "timeout=5"),
    ("proxy-authenticate", "Basic"),
    ("x-request-id", "req_123"),
]


def hostile_upstream(seen: list[httpx.Request]) -> httpx.MockTransport:
    """An upstream that answers every call with a completion and hop-by-hop and cookie headers."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        completion = {
            "id": "c1",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        body = httpx.ByteStream(json.dumps(completion).encode())  # a stream, like a real response
        return httpx.Response(
            200, stream=body, headers=[("content-type", "application/json"), *HOSTILE_UPSTREAM_HEADERS]
        )

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
@pytest.mark.parametrize("conversation", [None, "conv-1"])
async def test_hop_by_hop_cookies_and_caller_credentials_do_not_cross(
    tmp_path: Path, path: str, conversation: str | None
) -> None:
    seen: list[httpx.Request] = []
    async for harness in start(
        tmp_path, hostile_upstream(seen), upstream_api_key=UPSTREAM_KEY, admin_key=ADMIN_KEY
    ):
        key = await harness.create_key("caller")
        headers = {
            "authorization": f"Bearer {key}",
            "api-key": "caller-azure-key",
            "x-api-key": "caller-x-key",
            "openai-organization": "org-caller",
            "cookie": "a=b",
            "connection": "x-private",
            "x-private": "only-for-this-hop",
            "proxy-authorization": "Basic Zm9v",
            "x-custom": "kept",
        }
        if conversation:
            headers["x-conversation-id"] = conversation
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        response = await harness.client.post(path, json=body, headers=headers)
        assert response.status_code == 200, response.text
    for name in ("set-cookie", "x-hop", "keep-alive", "proxy-authenticate"):
        assert name not in response.headers
    assert response.headers["x-request-id"] == "req_123"
    sent = seen[-1].headers
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for name in (
        "api-key",
        "x-api-key",
        "openai-organization",
        "cookie",
        "x-private",
        "proxy-authorization",
        "x-conversation-id",
    ):
        assert name not in sent, name
    assert sent["x-custom"] == "kept"

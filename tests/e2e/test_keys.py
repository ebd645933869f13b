"""End-to-end: the gateway holding the upstream key; gateway keys, admin API, budgets, isolation."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from gateway.identity import caller_identity
from tests.helpers import CommandResult, auth, run_command
from tests.hostile import row_counts
from tests.servers import ServerProcess, gateway_app, upstream_requests

UPSTREAM_KEY = "sk-upstream-held-by-the-gateway"
ADMIN_KEY = "admin-" + secrets.token_hex(8)
# One USD per token, so the cost of a call is its token count (the mock's usage formula is deterministic).
PRICES = {"gpt-4o-mini": {"input": 1_000_000, "cached_input": 1_000_000, "output": 1_000_000}}
HI = [{"role": "user", "content": "hi"}]
HI_COST = 8  # prompt: 4 + len('"hi"') // 4 = 5 tokens; completion: len("[1 messages] hi") // 4 = 3 tokens


@pytest.fixture(scope="module")
def keyed(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway that holds the upstream key, with an admin key, a prices file and no key cache."""
    tmp = tmp_path_factory.mktemp("keyed")
    prices = tmp / "prices.json"
    prices.write_text(json.dumps(PRICES))
    server = gateway_app(
        upstream.url,
        database_url,
        upstream_api_key=UPSTREAM_KEY,
        admin_key=ADMIN_KEY,
        prices_file=str(prices),
        key_cache_seconds="0",
    ).start()
    try:
        yield server
    finally:
        server.stop()


def admin(
    server: ServerProcess, method: str, path: str, token: str | None = ADMIN_KEY, **kwargs: Any
) -> httpx.Response:
    """Call the admin API (with the admin key unless told otherwise)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, server.url + path, headers=headers, **kwargs)


def new_key(server: ServerProcess, budget_usd: float | None = None) -> str:
    """Create a key over HTTP and return its secret."""
    body: dict[str, Any] = {"name": f"k-{secrets.token_hex(4)}"}
    if budget_usd is not None:
        body["budget_usd"] = budget_usd
    response = admin(server, "POST", "/admin/keys", json=body)
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


def cli(database_url: str, *args: str) -> CommandResult:
    """Run `gateway keys ...` against the database."""
    return run_command("keys", *args, "--database-url", database_url)


def chat(
    server: ServerProcess, key: str, conversation: str | None = None, content: str = "hi", **extra: Any
) -> httpx.Response:
    """One chat call with httpx (so status and body can be checked whatever they are)."""
    headers = {"Authorization": f"Bearer {key}"}
    if conversation is not None:
        headers["X-Conversation-Id"] = conversation
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_without_an_active_key_every_call_is_refused_with_how_to_create_one(keyed: ServerProcess) -> None:
    for key in admin(keyed, "GET", "/admin/keys").json()["data"]:
        if key["revoked_at"] is None:
            admin(keyed, "DELETE", f"/admin/keys/{key['name']}")
    for token in ("sk-anything", None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(
            keyed.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI}, headers=headers
        )
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"
        if token:
            assert "gateway keys create NAME" in error["message"] and "none exists yet" in error["message"]
    with (
        OpenAI(base_url=keyed.url + "/v1", api_key="sk-anything", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]


def test_key_lifecycle_with_the_cli(
    keyed: ServerProcess, upstream: ServerProcess, database_url: str, conversation_id: str
) -> None:
    name = f"cli-{secrets.token_hex(4)}"
    created = cli(database_url, "create", name, "--budget-usd", "100")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("gw-") and "shown only now" in created.stderr
    with OpenAI(
        base_url=keyed.url + "/v1",
        api_key=secret,
        max_retries=0,
        default_headers={"X-Conversation-Id": conversation_id},
    ) as client:
        marker = f"lifecycle {secrets.token_hex(4)}"
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": marker}]
        )
        assert reply.choices[0].message.content == f"[1 messages] {marker}"
        received = [r for r in upstream_requests(upstream) if r["body"]["messages"][-1]["content"] == marker]
        assert [r["headers"]["authorization"] for r in received] == [f"Bearer {UPSTREAM_KEY}"]
        assert upstream_requests(upstream, secret) == []  # the caller's key never reaches the upstream
        listed = cli(database_url, "list")
        assert name in listed.stdout and secret not in listed.stdout and "100.000000" in listed.stdout
        as_json = json.loads(cli(database_url, "list", "--format", "json").stdout)["data"]
        mine = next(k for k in as_json if k["name"] == name)
        assert mine["identity"] == caller_identity(secret) and mine["spent_usd"] > 0 and "secret" not in mine
        assert cli(database_url, "revoke", name).returncode == 0
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    response = httpx.get(
        f"{keyed.url}/v1/conversations/{conversation_id}", headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 401  # a revoked key's conversations are unreachable
    assert cli(database_url, "create", name).returncode != 0  # names are never reused
    assert cli(database_url, "revoke", "no-such-key").returncode != 0
    assert cli(database_url, "create", "bad name").returncode != 0


def test_admin_key_api(keyed: ServerProcess) -> None:
    name = f"http-{secrets.token_hex(4)}"
    created = admin(keyed, "POST", "/admin/keys", json={"name": name, "budget_usd": 2.5})
    assert created.status_code == 200
    key = created.json()
    assert key["object"] == "gateway.key" and key["budget_usd"] == 2.5 and key["spent_usd"] == 0
    secret = key["secret"]
    assert chat(keyed, secret).status_code == 200
    listed = admin(keyed, "GET", "/admin/keys").json()["data"]
    assert next(k for k in listed if k["name"] == name)["spent_usd"] == HI_COST
    assert all("secret" not in k for k in listed) and secret not in json.dumps(listed)
    assert admin(keyed, "POST", "/admin/keys", json={"name": name}).json()["error"]["code"] == "key_exists"
    revoked = admin(keyed, "DELETE", f"/admin/keys/{name}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert chat(keyed, secret).status_code == 401
    again = admin(keyed, "DELETE", f"/admin/keys/{name}")  # idempotent
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert admin(keyed, "DELETE", "/admin/keys/never-made").status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": 5}, "name"),
        ({"name": "ok", "budget_usd": -1}, "budget_usd"),
        ({"name": "ok", "budget_usd": "lots"}, "budget_usd"),
        ({"name": "ok", "budget_usd": True}, "budget_usd"),
        ({"name": "ok", "budget": 5}, "budget"),
        ([], None),
    ],
)
def test_admin_create_rejects_bad_bodies(keyed: ServerProcess, body: Any, param: str | None) -> None:
    response = admin(keyed, "POST", "/admin/keys", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_admin_endpoints_need_the_admin_key(keyed: ServerProcess) -> None:
    caller = new_key(keyed)
    for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), ("DELETE", "/admin/keys/x")):
        assert admin(keyed, method, path, token=caller, json={"name": "x"}).status_code == 403
        assert admin(keyed, method, path, token=None, json={"name": "x"}).status_code == 401
        assert admin(keyed, method, path, token="not-a-key", json={"name": "x"}).status_code == 401
        assert admin(keyed, method, path, token=ADMIN_KEY[:-1], json={"name": "x"}).status_code == 401
    # the admin key is not a caller key: it cannot chat
    assert chat(keyed, ADMIN_KEY).status_code == 401


def test_budget_is_enforced_before_the_upstream_call(
    keyed: ServerProcess, upstream: ServerProcess, database_url: str
) -> None:
    secret = new_key(keyed, budget_usd=2 * HI_COST)
    assert [chat(keyed, secret).status_code for _ in range(2)] == [200, 200]
    before = len(upstream_requests(upstream))
    rows = asyncio.run(row_counts(database_url))
    for extra in ({}, {"stream": True}):
        refused = chat(keyed, secret, **extra)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert refused.headers["x-should-retry"] == "false"
    embeddings = httpx.post(
        keyed.url + "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "a"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert embeddings.status_code == 429
    assert len(upstream_requests(upstream)) == before  # refused before any upstream call
    assert asyncio.run(row_counts(database_url)).counts == rows.counts  # and nothing recorded
    with (
        OpenAI(base_url=keyed.url + "/v1", api_key=secret) as client,
        pytest.raises(openai.RateLimitError) as err,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    assert err.value.code == "budget_exceeded"
    assert len(upstream_requests(upstream)) == before  # the SDK did not retry the 429 either
    # another key is not affected
    assert chat(keyed, new_key(keyed, budget_usd=HI_COST)).status_code == 200


def set_cost_cap(server: ServerProcess, key: str, conversation_id: str, usd: float | None) -> None:
    """PATCH the conversation's max_cost_usd through the conversations API."""
    response = httpx.patch(
        f"{server.url}/v1/conversations/{conversation_id}",
        json={"max_cost_usd": usd},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["settings"]["max_cost_usd"] == usd


def test_conversation_cost_cap(
    keyed: ServerProcess, upstream: ServerProcess, database_url: str, conversation_id: str
) -> None:
    secret = new_key(keyed)
    assert chat(keyed, secret, conversation_id).status_code == 200  # costs HI_COST
    set_cost_cap(keyed, secret, conversation_id, HI_COST + 1)
    assert (
        chat(keyed, secret, conversation_id, "again").status_code == 200
    )  # 8 < 9 spent: allowed, overshoots
    before = len(upstream_requests(upstream))
    refused = chat(keyed, secret, conversation_id, "once more")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert len(upstream_requests(upstream)) == before
    messages = httpx.get(
        f"{keyed.url}/v1/conversations/{conversation_id}/messages",
        headers={"Authorization": f"Bearer {secret}"},
    ).json()["data"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["hi", "again"]
    assert chat(keyed, secret, "another-conversation").status_code == 200  # the cap is per conversation
    set_cost_cap(keyed, secret, conversation_id, None)
    assert chat(keyed, secret, conversation_id, "uncapped").status_code == 200


def _as_missing(response: httpx.Response, conversation_id: str) -> tuple[int, str]:
    return response.status_code, response.text.replace(conversation_id, "<id>")


def test_two_keys_are_isolated(keyed: ServerProcess, upstream: ServerProcess) -> None:
    alice, bob = new_key(keyed), new_key(keyed)
    shared, only_alice = f"shared-{secrets.token_hex(4)}", f"alice-{secrets.token_hex(4)}"
    assert chat(keyed, alice, shared, "alice secret plan").status_code == 200
    assert chat(keyed, alice, only_alice, "alice only").status_code == 200
    reply = chat(keyed, bob, shared, "bob here")
    assert reply.json()["choices"][0]["message"]["content"] == "[1 messages] bob here"
    sent = upstream_requests(upstream)[-1]["body"]["messages"]
    assert "alice secret plan" not in json.dumps(sent)
    bob_headers = {"Authorization": f"Bearer {bob}"}
    never = f"never-{secrets.token_hex(4)}"
    for suffix in ("", "/messages"):
        theirs = httpx.get(f"{keyed.url}/v1/conversations/{only_alice}{suffix}", headers=bob_headers)
        missing = httpx.get(f"{keyed.url}/v1/conversations/{never}{suffix}", headers=bob_headers)
        assert theirs.status_code == 404
        assert _as_missing(theirs, only_alice) == _as_missing(missing, never)
    for method, suffix, body in (
        ("PATCH", "", {"metadata": {"x": "y"}}),
        ("DELETE", "", None),
        ("GET", "/items", None),
        ("POST", "", {"max_cost_usd": 0}),
    ):
        theirs = httpx.request(
            method, f"{keyed.url}/v1/conversations/{only_alice}{suffix}", json=body, headers=bob_headers
        )
        missing = httpx.request(
            method, f"{keyed.url}/v1/conversations/{never}{suffix}", json=body, headers=bob_headers
        )
        assert theirs.status_code == 404, (method, suffix, theirs.text)
        assert _as_missing(theirs, only_alice) == _as_missing(missing, never)
    alice_headers = {"Authorization": f"Bearer {alice}"}
    still = httpx.get(f"{keyed.url}/v1/conversations/{only_alice}", headers=alice_headers).json()
    assert still["message_count"] == 2 and still["metadata"] == {}  # bob's update and delete did nothing
    listed = httpx.get(f"{keyed.url}/v1/conversations", headers=bob_headers).json()
    assert [c["id"] for c in listed["data"]] == [shared]
    assert {shared, only_alice} <= {
        c["id"] for c in httpx.get(f"{keyed.url}/v1/conversations", headers=alice_headers).json()["data"]
    }
    after = httpx.get(f"{keyed.url}/v1/conversations", params={"after": only_alice}, headers=bob_headers)
    assert (
        after.status_code == 400 and after.json()["error"]["param"] == "after"
    )  # no peeking through cursors
    theirs = httpx.get(f"{keyed.url}/v1/conversations/{only_alice}/usage", headers=bob_headers)
    missing = httpx.get(f"{keyed.url}/v1/conversations/{never}/usage", headers=bob_headers)
    assert _as_missing(theirs, only_alice) == _as_missing(missing, never) and theirs.status_code == 404
    assert usage(keyed, bob).json()["data"][0]["requests"] == 1  # alice's two calls are not in bob's usage
    bob_messages = httpx.get(f"{keyed.url}/v1/conversations/{shared}/messages", headers=bob_headers).json()[
        "data"
    ]
    assert [m["content"] for m in bob_messages] == ["bob here", "[1 messages] bob here"]


def usage(server: ServerProcess, token: str | None, **params: str) -> httpx.Response:
    """GET /v1/usage with a bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(server.url + "/v1/usage", params=params, headers=headers)


def test_usage_is_per_key_and_the_admin_sees_every_caller(keyed: ServerProcess) -> None:
    alice, bob = new_key(keyed), new_key(keyed)
    for _ in range(2):
        assert chat(keyed, alice, f"a-{secrets.token_hex(3)}").status_code == 200
    assert chat(keyed, bob).status_code == 200
    mine = usage(keyed, alice).json()["data"][0]
    assert mine["requests"] == 2 and mine["cost_usd"] == 2 * HI_COST
    assert usage(keyed, bob).json()["data"][0]["requests"] == 1
    everyone = usage(keyed, ADMIN_KEY, scope="all", group_by="caller")
    assert everyone.status_code == 200, everyone.text
    by_caller = {row["key"]: row["requests"] for row in everyone.json()["data"]}
    assert by_caller[caller_identity(alice)] == 2 and by_caller[caller_identity(bob)] == 1
    total = usage(keyed, ADMIN_KEY, scope="all").json()["data"][0]
    assert total["requests"] >= 3 and total["requests"] == sum(by_caller.values())
    assert usage(keyed, alice, scope="all").status_code == 403
    assert usage(keyed, None, scope="all").status_code == 401
    assert usage(keyed, "not-a-key", scope="all").status_code == 401
    assert usage(keyed, alice, scope="everyone").json()["error"]["param"] == "scope"
    assert usage(keyed, ADMIN_KEY).status_code == 401  # the admin key is no caller: its own usage is nothing


HELD_UPSTREAM_KEY = "sk-upstream-bb56-" + secrets.token_hex(4)
HELD_ADMIN_KEY = "admin-bb56-" + secrets.token_hex(8)
HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def held(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway holding the upstream key, with an admin key and prices, and the DEFAULT key cache."""
    tmp = tmp_path_factory.mktemp("bb56")
    prices = tmp / "prices.json"
    prices.write_text(json.dumps(PRICES))
    server = gateway_app(
        upstream.url,
        database_url,
        upstream_api_key=HELD_UPSTREAM_KEY,
        admin_key=HELD_ADMIN_KEY,
        prices_file=str(prices),
    ).start()
    try:
        yield server
    finally:
        server.stop()


def admin_key(server: ServerProcess, budget_usd: float | None = None) -> tuple[str, str]:
    """Create a key over HTTP; returns (name, secret)."""
    body: dict[str, Any] = {"name": f"bb-{secrets.token_hex(4)}"}
    if budget_usd is not None:
        body["budget_usd"] = budget_usd
    response = httpx.post(server.url + "/admin/keys", json=body, headers=auth(HELD_ADMIN_KEY))
    assert response.status_code == 200, response.text
    return body["name"], response.json()["secret"]


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    """The body is {"error": {message, type, param, code}} with the code expected."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["code"] == code


class Counter:
    """The SDK's public `DefaultHttpxClient`, counting the requests it sends (SDK retries included)."""

    def __init__(self) -> None:
        self.sent = 0
        self.client = openai.DefaultHttpxClient(event_hooks={"request": [self._count]}, timeout=30)

    def _count(self, _: object) -> None:
        self.sent += 1


# --- headers against the real server -------------------------------------------------------------------


def test_with_no_keys_every_endpoint_is_refused_with_how_to_create_one(held: ServerProcess) -> None:
    # First test of the module: the database has no key yet.
    calls = [
        ("POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HI}),
        ("GET", "/v1/models", None),
        ("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "a"}),
        ("GET", "/v1/conversations", None),
        ("GET", "/v1/usage", None),
    ]
    for method, path, body in calls:
        response = httpx.request(method, held.url + path, json=body, headers=auth("sk-some-caller"))
        assert_openai_error(response, 401, "invalid_api_key")
        assert "gateway keys create" in response.json()["error"]["message"], (path, response.text)


def test_cli_key_with_sdk_then_revoked_is_invalid_api_key_on_every_path(
    held: ServerProcess, upstream: ServerProcess, database_url: str, conversation_id: str
) -> None:
    name = f"cli-{secrets.token_hex(4)}"
    created = cli(database_url, "create", name, "--budget-usd", "1000")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("gw-") and secret not in created.stderr
    listed = cli(database_url, "list")
    assert listed.returncode == 0 and name in listed.stdout and secret not in listed.stdout + listed.stderr
    with OpenAI(base_url=held.url + "/v1", api_key=secret, max_retries=0) as client:
        conv = {"X-Conversation-Id": conversation_id}
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=HI, extra_headers=conv)
        assert reply.choices[0].message.content == "[1 messages] hi"
        streamed = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}], stream=True, extra_headers=conv
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "[3 messages] s"
        held_calls = upstream_requests(upstream, HELD_UPSTREAM_KEY)
        assert [r["body"]["messages"][-1]["content"] for r in held_calls[-2:]] == ["hi", "s"]
        assert upstream_requests(upstream, secret) == []  # the caller's key never reaches the upstream
        assert client.models.list().data is not None  # pass-through works with the key
        revoked = cli(database_url, "revoke", name)
        assert revoked.returncode == 0, revoked.stderr
        # the CLI revokes in the database: allow the documented cache period (5 s) to pass
        fresh = OpenAI(base_url=held.url + "/v1", api_key=secret, max_retries=0)
        with httpx.Client() as poll:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if poll.get(held.url + "/v1/conversations", headers=auth(secret)).status_code == 401:
                    break
                time.sleep(0.25)
        for call in (
            lambda: fresh.chat.completions.create(model="gpt-4o-mini", messages=HI, extra_headers=conv),
            lambda: list(fresh.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)),
            lambda: fresh.models.list(),
            lambda: fresh.embeddings.create(model="text-embedding-3-small", input="a"),
        ):
            with pytest.raises(openai.AuthenticationError) as err:
                call()
            assert err.value.code == "invalid_api_key"
            assert err.value.type == "authentication_error"
        fresh.close()
    for path in (
        f"/v1/conversations/{conversation_id}",
        f"/v1/conversations/{conversation_id}/messages",
        "/v1/usage",
    ):
        assert_openai_error(httpx.get(held.url + path, headers=auth(secret)), 401, "invalid_api_key")


def test_admin_revoke_takes_effect_at_once_with_the_default_cache(held: ServerProcess) -> None:
    name, secret = admin_key(held)
    with OpenAI(base_url=held.url + "/v1", api_key=secret, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # the key is now cached
        deleted = httpx.delete(f"{held.url}/admin/keys/{name}", headers=auth(HELD_ADMIN_KEY))
        assert deleted.status_code == 200 and deleted.json()["revoked_at"] is not None
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert err.value.code == "invalid_api_key"
    again = httpx.delete(f"{held.url}/admin/keys/{name}", headers=auth(HELD_ADMIN_KEY))
    assert again.status_code == 200  # idempotent
    listed = httpx.get(held.url + "/admin/keys", headers=auth(HELD_ADMIN_KEY)).json()
    mine = [k for k in listed["data"] if k["name"] == name]
    assert len(mine) == 1 and mine[0]["revoked_at"] is not None and "secret" not in mine[0]


def test_budget_refusal_is_a_rate_limit_error_the_sdk_does_not_retry(
    held: ServerProcess, upstream: ServerProcess
) -> None:
    _, secret = admin_key(held, budget_usd=1)  # "hi" costs 8 USD at these prices: one call crosses it
    counter = Counter()
    with OpenAI(base_url=held.url + "/v1", api_key=secret, http_client=counter.client) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        before = len(upstream_requests(upstream))
        counter.sent = 0
        with pytest.raises(openai.RateLimitError) as err:
            list(client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))
        assert err.value.code == "budget_exceeded" and counter.sent == 1
        with pytest.raises(openai.RateLimitError) as err:
            client.models.list()
        assert err.value.code == "budget_exceeded" and counter.sent == 2
    assert len(upstream_requests(upstream)) == before


def test_conversation_cap_refusal_through_the_sdk_is_not_retried(
    held: ServerProcess, upstream: ServerProcess, conversation_id: str
) -> None:
    _, secret = admin_key(held)
    conv = {"X-Conversation-Id": conversation_id}
    counter = Counter()
    with OpenAI(base_url=held.url + "/v1", api_key=secret, http_client=counter.client) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, extra_headers=conv)
        capped = httpx.patch(
            f"{held.url}/v1/conversations/{conversation_id}",
            json={"max_cost_usd": 0.5},
            headers=auth(secret),
        )
        assert capped.status_code == 200, capped.text
        counter.sent = 0
        before = len(upstream_requests(upstream))
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "more"}], extra_headers=conv
            )
        assert err.value.code == "budget_exceeded" and counter.sent == 1
        assert len(upstream_requests(upstream)) == before
        # another conversation of the same key is not capped
        client.chat.completions.create(
            model="gpt-4o-mini", messages=HI, extra_headers={"X-Conversation-Id": "other"}
        )
    count = httpx.get(f"{held.url}/v1/conversations/{conversation_id}", headers=auth(secret)).json()
    assert count["message_count"] == 2


def test_caller_credentials_never_reach_the_upstream_when_the_gateway_holds_the_key(
    held: ServerProcess, upstream: ServerProcess, conversation_id: str
) -> None:
    _, secret = admin_key(held)
    marker = f"creds {secrets.token_hex(4)}"
    extra = {
        "api-key": "caller-azure",
        "x-api-key": "caller-x",
        "OpenAI-Organization": "org-caller",
        "OpenAI-Project": "proj-caller",
    }
    with OpenAI(base_url=held.url + "/v1", api_key=secret, max_retries=0, default_headers=extra) as client:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": marker}],
            extra_headers={"X-Conversation-Id": conversation_id},
        )
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": marker}])
    received = [r for r in upstream_requests(upstream) if r["body"] and marker in json.dumps(r["body"])]
    assert len(received) == 2
    for request in received:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["authorization"] == f"Bearer {HELD_UPSTREAM_KEY}"
        assert not {k.lower() for k in extra} & set(headers), headers
        assert secret not in json.dumps(headers)


def test_admin_scope_all_and_usage_of_the_admin_in_pass_through_mode(
    held: ServerProcess,
) -> None:
    _, secret = admin_key(held)
    _, other = admin_key(held)  # another caller's call: scope=all counts more than the caller's own
    for key in (secret, other):
        with OpenAI(base_url=held.url + "/v1", api_key=key, max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    everyone = httpx.get(held.url + "/v1/usage", params={"scope": "all"}, headers=auth(HELD_ADMIN_KEY))
    assert everyone.status_code == 200, everyone.text
    mine = httpx.get(held.url + "/v1/usage", headers=auth(secret)).json()
    assert everyone.json()["requests"] > mine["requests"] >= 1
    refused = httpx.get(held.url + "/v1/usage", params={"scope": "all"}, headers=auth(secret))
    assert refused.status_code == 403 and refused.json()["error"]["type"]


# --- settings that differ: extra gateways ----------------------------------------------------------------


def test_zero_budgets_refuse_the_first_call(held: ServerProcess, upstream: ServerProcess) -> None:
    _, secret = admin_key(held, budget_usd=0)
    before = len(upstream_requests(upstream))
    response = httpx.post(
        held.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI},
        headers=auth(secret),
    )
    assert_openai_error(response, 429, "budget_exceeded")
    _, other = admin_key(held)
    conversation = f"zero-{secrets.token_hex(4)}"
    created = httpx.post(
        held.url + "/v1/conversations", json={"id": conversation, "max_cost_usd": 0}, headers=auth(other)
    )
    assert created.status_code == 200, created.text
    response = httpx.post(
        held.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI},
        headers={**auth(other), "X-Conversation-Id": conversation},
    )
    assert_openai_error(response, 429, "budget_exceeded")
    assert len(upstream_requests(upstream)) == before


@pytest.mark.parametrize("budget", ["5", "", {"usd": 5}, [5], 1e7, -0.01])
def test_admin_create_takes_only_a_json_number_as_budget(held: ServerProcess, budget: Any) -> None:
    # The published schema says `number`: a numeric string is a wrong type (400 naming the field).
    body = json.dumps({"name": f"typed-{secrets.token_hex(4)}", "budget_usd": budget})
    response = httpx.post(
        held.url + "/admin/keys",
        content=body,
        headers={**auth(HELD_ADMIN_KEY), "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "budget_usd"
    names = [
        k["name"] for k in httpx.get(held.url + "/admin/keys", headers=auth(HELD_ADMIN_KEY)).json()["data"]
    ]
    assert json.loads(body)["name"] not in names

"""Black-box: issues 5 and 6 read literally, through the official SDK, the CLI and raw HTTP.

Only what the other e2e modules leave open: every endpoint refused without keys, revocation at once with the
default key cache, streams and pass-through calls of a revoked or exhausted key, the SDK not retrying a budget
refusal, caller credentials and hop-by-hop headers against the real server, retry-after through the SDK on
streams, Idempotency-Key replays of streams, and the metric families by type.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.scripted_upstream import ScriptedUpstream, completion, respond
from tests.servers import ServerProcess, base_env, gateway_server, upstream_requests

UPSTREAM_KEY = "sk-upstream-bb56-" + secrets.token_hex(4)
ADMIN_KEY = "admin-bb56-" + secrets.token_hex(8)
PRICES = {"gpt-4o-mini": {"input": 1_000_000, "cached_input": 1_000_000, "output": 1_000_000}}
HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def held(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway holding the upstream key, with an admin key and prices, and the DEFAULT key cache."""
    tmp = tmp_path_factory.mktemp("bb56")
    prices = tmp / "prices.json"
    prices.write_text(json.dumps(PRICES))
    server = gateway_server(
        tmp,
        upstream.url,
        database_url,
        upstream_api_key=UPSTREAM_KEY,
        admin_key=ADMIN_KEY,
        prices_file=str(prices),
    ).start()
    try:
        yield server
    finally:
        server.stop()


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `gateway keys ...` against the database."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "keys", *args, "--database-url", database_url],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def admin_key(server: ServerProcess, budget_usd: float | None = None) -> tuple[str, str]:
    """Create a key over HTTP; returns (name, secret)."""
    body: dict[str, Any] = {"name": f"bb-{secrets.token_hex(4)}"}
    if budget_usd is not None:
        body["budget_usd"] = budget_usd
    response = httpx.post(server.url + "/admin/keys", json=body, headers=bearer(ADMIN_KEY))
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
        response = httpx.request(method, held.url + path, json=body, headers=bearer("sk-some-caller"))
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
        held_calls = upstream_requests(upstream, UPSTREAM_KEY)
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
                if poll.get(held.url + "/v1/conversations", headers=bearer(secret)).status_code == 401:
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
        assert_openai_error(httpx.get(held.url + path, headers=bearer(secret)), 401, "invalid_api_key")


def test_admin_revoke_takes_effect_at_once_with_the_default_cache(held: ServerProcess) -> None:
    name, secret = admin_key(held)
    with OpenAI(base_url=held.url + "/v1", api_key=secret, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # the key is now cached
        deleted = httpx.delete(f"{held.url}/admin/keys/{name}", headers=bearer(ADMIN_KEY))
        assert deleted.status_code == 200 and deleted.json()["revoked_at"] is not None
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert err.value.code == "invalid_api_key"
    again = httpx.delete(f"{held.url}/admin/keys/{name}", headers=bearer(ADMIN_KEY))
    assert again.status_code == 200  # idempotent
    listed = httpx.get(held.url + "/admin/keys", headers=bearer(ADMIN_KEY)).json()
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
            headers=bearer(secret),
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
    count = httpx.get(f"{held.url}/v1/conversations/{conversation_id}", headers=bearer(secret)).json()
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
        assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert not {k.lower() for k in extra} & set(headers), headers
        assert secret not in json.dumps(headers)


def test_admin_scope_all_and_usage_of_the_admin_in_pass_through_mode(
    held: ServerProcess,
) -> None:
    _, secret = admin_key(held)
    with OpenAI(base_url=held.url + "/v1", api_key=secret, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    everyone = httpx.get(held.url + "/v1/usage", params={"scope": "all"}, headers=bearer(ADMIN_KEY))
    assert everyone.status_code == 200, everyone.text
    mine = httpx.get(held.url + "/v1/usage", headers=bearer(secret)).json()
    assert everyone.json()["requests"] > mine["requests"] >= 1
    refused = httpx.get(held.url + "/v1/usage", params={"scope": "all"}, headers=bearer(secret))
    assert refused.status_code == 403 and refused.json()["error"]["type"]


# --- pass-through mode, the shared gateway ---------------------------------------------------------------


def test_upstream_429_retry_after_reaches_the_sdk_for_plain_and_streamed_turns(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0) as client:
        conv = {"X-Conversation-Id": conversation_id}
        for stream in (False, True):
            with pytest.raises(openai.RateLimitError) as err:
                result = client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "FAULT:429"}],
                    stream=stream,
                    extra_headers=conv,
                )
                if stream:
                    list(result)
            assert err.value.response.headers["retry-after"] == "7"
    response = httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=bearer(api_key))
    assert response.status_code == 404  # nothing was added, not even the conversation


def test_idempotency_key_replays_a_stream_as_a_stream_the_sdk_reads(
    gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    key = "idem-" + secrets.token_hex(6)
    headers = {"X-Conversation-Id": conversation_id, "Idempotency-Key": key}
    messages: Any = [{"role": "user", "content": "tell me"}]
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0) as client:

        def run() -> tuple[str, str, Any]:
            chunks = list(
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers=headers,
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            usage = [c.usage for c in chunks if c.usage]
            assert len({c.id for c in chunks}) == 1 and len(finish) == 1 and len(usage) == 1
            return text, chunks[0].id, usage[0]

        first = run()
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "next"}],
            extra_headers={"X-Conversation-Id": conversation_id},
        )
        again = run()  # an older turn, replayed by its key
        as_json = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers=headers
        )
    assert first == again
    assert as_json.choices[0].message.content == first[0] and as_json.id == first[1]
    assert len(upstream_requests(upstream, api_key)) == 2
    stored = httpx.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=bearer(api_key)).json()
    assert stored["message_count"] == 4


def test_metrics_expose_every_named_family_with_its_type(
    gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    with OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0) as client:
        list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=HI,
                stream=True,
                extra_headers={"X-Conversation-Id": conversation_id},
            )
        )
    response = httpx.get(gateway.url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    expected = {
        "gateway_requests": "counter",
        "gateway_upstream_latency_seconds": "histogram",
        "gateway_stream_first_chunk_seconds": "histogram",
        "gateway_streams_in_flight": "gauge",
        "gateway_tokens": "counter",
        "gateway_cost_usd": "counter",
        "gateway_lock_wait_seconds": "histogram",
    }
    for name, kind in expected.items():
        assert name in families and families[name].type == kind, name
    labels = [s.labels for s in families["gateway_requests"].samples if s.name == "gateway_requests_total"]
    assert any(
        label.get("route") == "/v1/chat/completions" and label.get("status") == "200" for label in labels
    )
    tokens = [s.labels for s in families["gateway_tokens"].samples if s.name == "gateway_tokens_total"]
    assert any(label.get("model", "").startswith("gpt-4o-mini") for label in tokens)
    assert families["gateway_streams_in_flight"].samples[0].value == 0


# --- headers against the real server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def before_scripted(
    scripted: ScriptedUpstream, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A pass-through gateway in front of the scripted upstream."""
    server = gateway_server(tmp_path_factory.mktemp("bb56s"), scripted.url, database_url).start()
    try:
        yield server
    finally:
        server.stop()


HOP_RESPONSE = {
    "connection": "x-hop-only",
    "x-hop-only": "drop me",
    "keep-alive": "timeout=5",
    "proxy-authenticate": "Basic",
    "set-cookie": "session=upstream-secret",
    "x-kept": "yes",
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/chat/completions+conv", "/v1/models"])
def test_hop_by_hop_and_cookie_headers_do_not_cross_the_real_server(
    before_scripted: ServerProcess, scripted: ScriptedUpstream, path: str
) -> None:
    token = "sk-hop-" + secrets.token_hex(6)
    stateful = path.endswith("+conv")
    path = path.removesuffix("+conv")
    upstream_body = completion({"role": "assistant", "content": "ok", "refusal": None})
    scripted.script(
        token, respond(200, upstream_body if "chat" in path else {"object": "list", "data": []}, HOP_RESPONSE)
    )
    headers = {
        **bearer(token),
        "Connection": "keep-alive, x-private",
        "X-Private": "for this hop only",
        "Proxy-Authorization": "Basic Zm9v",
        "Cookie": "caller=secret",
        "X-Forwarded-Ok": "stays",
    }
    if stateful:
        headers["X-Conversation-Id"] = f"hop-{secrets.token_hex(4)}"
    body = {"model": "m", "messages": HI} if "chat" in path else None
    method = "POST" if body else "GET"
    response = httpx.request(method, before_scripted.url + path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    for name in ("x-hop-only", "proxy-authenticate", "set-cookie"):
        assert name not in response.headers, name
    assert response.headers.get("keep-alive") != "timeout=5"
    (received,) = scripted.received(token)
    for name in ("x-private", "proxy-authorization", "cookie"):
        assert name not in received.headers, (name, received.headers)
    assert received.headers.get("connection", "").lower() in ("", "keep-alive", "close")


def test_upstream_429_on_a_proxied_endpoint_keeps_retry_after(
    before_scripted: ServerProcess, scripted: ScriptedUpstream
) -> None:
    token = "sk-429-" + secrets.token_hex(6)
    limited = {
        "error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    }
    scripted.script(token, respond(429, limited, {"retry-after": "7", "x-ratelimit-remaining-requests": "0"}))
    with (
        OpenAI(base_url=before_scripted.url + "/v1", api_key=token, max_retries=0) as client,
        pytest.raises(openai.RateLimitError) as err,
    ):
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.value.code == "rate_limit_exceeded"


# --- settings that differ: extra gateways ----------------------------------------------------------------


def test_zero_budgets_refuse_the_first_call(held: ServerProcess, upstream: ServerProcess) -> None:
    _, secret = admin_key(held, budget_usd=0)
    before = len(upstream_requests(upstream))
    response = httpx.post(
        held.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI},
        headers=bearer(secret),
    )
    assert_openai_error(response, 429, "budget_exceeded")
    _, other = admin_key(held)
    conversation = f"zero-{secrets.token_hex(4)}"
    created = httpx.post(
        held.url + "/v1/conversations", json={"id": conversation, "max_cost_usd": 0}, headers=bearer(other)
    )
    assert created.status_code == 200, created.text
    response = httpx.post(
        held.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI},
        headers={**bearer(other), "X-Conversation-Id": conversation},
    )
    assert_openai_error(response, 429, "budget_exceeded")
    assert len(upstream_requests(upstream)) == before


def test_idempotency_key_outlives_the_retry_count_window(
    start_gateway: Any, upstream: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    server = start_gateway(database_url, retry_replay_window="0.5")
    url = f"{server.url}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "keyed"}]}
    headers = {**bearer(api_key), "X-Conversation-Id": conversation_id, "Idempotency-Key": "k-1"}
    first = httpx.post(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    time.sleep(0.7)  # past the retry-count window, far inside the 24 h of an Idempotency-Key
    again = httpx.post(url, json=body, headers={**headers, "x-stainless-retry-count": "1"})
    assert again.status_code == 200 and again.headers.get("x-gateway-replayed") == "true"
    assert again.json() == first.json()
    assert len(upstream_requests(upstream, api_key)) == 1


def test_sigterm_past_the_grace_cancels_and_stores_no_half_turn(
    start_gateway: Any, upstream: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    server = start_gateway(database_url, shutdown_grace="1")
    assert server.process is not None
    url = f"{server.url}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "FAULT:slow:15000 too slow"}]}
    headers = {**bearer(api_key), "X-Conversation-Id": conversation_id}
    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(httpx.post(url, json={**body, "stream": True}, headers=headers, timeout=30))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 20
    while not upstream_requests(upstream, api_key):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    server.process.send_signal(15)
    code = server.process.wait(12)  # the grace (1 s) ends long before the upstream would answer (15 s)
    thread.join(20)
    assert code in (0, -15), server.log()[-2000:]
    if outcome and isinstance(outcome[0], httpx.Response):
        assert not outcome[0].text.endswith("data: [DONE]\n\n")  # never acknowledged
    server.stop()
    restarted = start_gateway(database_url)
    stored = httpx.get(
        f"{restarted.url}/v1/conversations/{conversation_id}/messages", headers=bearer(api_key)
    )
    assert stored.status_code == 404 or stored.json()["data"] == [], stored.text


@pytest.mark.parametrize("budget", ["5", "", {"usd": 5}, [5], 1e7, -0.01])
def test_admin_create_takes_only_a_json_number_as_budget(held: ServerProcess, budget: Any) -> None:
    # The published schema says `number`: a numeric string is a wrong type (400 naming the field).
    body = json.dumps({"name": f"typed-{secrets.token_hex(4)}", "budget_usd": budget})
    response = httpx.post(
        held.url + "/admin/keys",
        content=body,
        headers={**bearer(ADMIN_KEY), "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "budget_usd"
    names = [k["name"] for k in httpx.get(held.url + "/admin/keys", headers=bearer(ADMIN_KEY)).json()["data"]]
    assert json.loads(body)["name"] not in names


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("stream", [False, True])
def test_a_token_the_upstream_refuses_creates_nothing_not_even_usage(
    before_scripted: ServerProcess, scripted: ScriptedUpstream, status: int, stream: bool
) -> None:
    token = "sk-refused-" + secrets.token_hex(6)
    refusal = {
        "error": {"message": "no", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    }
    scripted.script(token, respond(status, refusal))
    conversation = f"refused-{secrets.token_hex(4)}"
    response = httpx.post(
        before_scripted.url + "/v1/chat/completions",
        json={"model": "m", "messages": HI, "stream": stream},
        headers={**bearer(token), "X-Conversation-Id": conversation},
    )
    assert response.status_code == status and response.json() == refusal
    got = httpx.get(f"{before_scripted.url}/v1/conversations/{conversation}", headers=bearer(token))
    assert got.status_code == 404
    assert httpx.get(f"{before_scripted.url}/v1/conversations", headers=bearer(token)).json()["data"] == []
    assert httpx.get(f"{before_scripted.url}/v1/usage", headers=bearer(token)).json()["requests"] == 0

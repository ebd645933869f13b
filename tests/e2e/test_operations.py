"""End-to-end: /metrics, request ids, JSON and text access logs, the upstream's request id per attempt."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import request_log
from tests.servers import ServerProcess, gateway_server

CHAT = "/v1/chat/completions"
PROXY = "/v1/{path:path}"
MINI = "gpt-4o-mini-2024-07-18"  # what the mock answers for gpt-4o-mini
LONG = "a long question about the weather " * 20  # enough prompt tokens for the mock to report cached ones
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def json_gateway(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway writing JSON logs, shared by this module (per backend)."""
    server = gateway_server(tmp_path_factory.mktemp("ops"), upstream.url, database_url, log_format="json")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def scrape(server: ServerProcess) -> Samples:
    """Every sample of GET /metrics, keyed by name and labels."""
    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    """How much one sample grew between two scrapes (a missing sample counts as 0)."""
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy (the server logs and records after the body ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def attempt_row(database_url: str, request_id: str) -> dict[str, Any] | None:
    """The request-log row the gateway wrote for one request id (None until it is written)."""
    rows = request_log(database_url, request_id=request_id)
    return rows[0] if rows else None


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line the server printed, each parsed as JSON (fails on any other line)."""
    return [json.loads(line) for line in server.log().splitlines() if line.strip()]


def access_line(server: ServerProcess, request_id: str) -> dict[str, Any]:
    """The JSON access-log line of one request."""

    def find() -> dict[str, Any] | None:
        lines = [x for x in json_lines(server) if x.get("request_id") == request_id]
        return lines[0] if lines else None

    line: dict[str, Any] = wait_for(find, f"the access log line of {request_id}")
    return line


def test_metrics_count_requests_tokens_cost_and_streams(
    json_gateway: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    before = scrape(json_gateway)
    usages: dict[str, list[Any]] = {MINI: [], "o4-mini": []}
    request_ids = []
    headers = {"X-Conversation-Id": conversation_id}
    with OpenAI(base_url=json_gateway.url + "/v1", api_key=api_key, default_headers=headers) as client:
        for content in ("first", LONG):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": content}]
            )
            request_ids.append(raw.headers["x-gateway-request-id"])
            usages[MINI].append(raw.parse().usage)
        raw_stream = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "third"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        request_ids.append(raw_stream.headers["x-gateway-request-id"])
        chunks = list(raw_stream.parse())
        usages[MINI].append(chunks[-1].usage)
    # a stateless call of a reasoning model: no history, reasoning tokens reported
    with OpenAI(base_url=json_gateway.url + "/v1", api_key=api_key) as stateless:
        reply = stateless.chat.completions.create(
            model="o4-mini", messages=[{"role": "user", "content": LONG}]
        )
        usages["o4-mini"].append(reply.usage)
        assert stateless.models.list().data
    assert httpx.get(json_gateway.url + "/nowhere").status_code == 404
    rows = [
        wait_for(lambda rid=rid: attempt_row(database_url, rid), "the attempt row") for rid in request_ids
    ]
    after = scrape(json_gateway)

    assert delta(after, before, "gateway_requests_total", route=CHAT, method="POST", status="200") == 4
    assert delta(after, before, "gateway_requests_total", route=PROXY, method="GET", status="200") == 1
    assert delta(after, before, "gateway_requests_total", route="unmatched", method="GET", status="404") == 1
    for model, seen in usages.items():
        expected = {
            "prompt": sum(u.prompt_tokens for u in seen),
            "completion": sum(u.completion_tokens for u in seen),
            "cached": sum(u.prompt_tokens_details.cached_tokens for u in seen),
            "reasoning": sum(u.completion_tokens_details.reasoning_tokens for u in seen),
        }
        for kind, value in expected.items():
            assert delta(after, before, "gateway_tokens_total", model=model, kind=kind) == value, (
                model,
                kind,
            )
    assert usages[MINI][1].prompt_tokens_details.cached_tokens > 0
    assert usages["o4-mini"][0].completion_tokens_details.reasoning_tokens > 0
    # history tokens and cost: the same numbers as the request log
    history = sum(row["history_tokens"] for row in rows)
    assert history > 0
    assert delta(after, before, "gateway_tokens_total", model=MINI, kind="history") == history
    cost = sum(row["cost_pusd"] for row in rows) / 1e12
    assert cost > 0
    assert delta(after, before, "gateway_cost_usd_total", model=MINI) == pytest.approx(cost)
    history_cost = sum(row["history_cost_pusd"] for row in rows) / 1e12
    assert (
        0 < delta(after, before, "gateway_history_cost_usd_total", model=MINI) == pytest.approx(history_cost)
    )

    assert delta(after, before, "gateway_stream_first_chunk_seconds_count", route=CHAT) == 1
    assert after[("gateway_streams_in_flight", frozenset())] == 0
    assert delta(after, before, "gateway_upstream_latency_seconds_count", endpoint=CHAT) == 4
    assert delta(after, before, "gateway_upstream_latency_seconds_count", endpoint=PROXY) == 1
    assert delta(after, before, "gateway_lock_wait_seconds_count") == 3  # the stateful turns only
    assert delta(after, before, "gateway_request_duration_seconds_count", route=CHAT) == 4


def test_json_access_log_and_upstream_request_ids(
    json_gateway: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    headers = {"X-Conversation-Id": conversation_id}
    with OpenAI(base_url=json_gateway.url + "/v1", api_key=api_key, default_headers=headers) as client:
        plain = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "secret words 4711"}]
        )
        stream = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "more secret words"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
        models = client.models.with_raw_response.list()
    for raw, path, conversation in [
        (plain, CHAT, conversation_id),
        (stream, CHAT, conversation_id),
        (models, "/v1/models", conversation_id),
    ]:
        request_id = raw.headers["x-gateway-request-id"]
        upstream_id = raw.headers["x-request-id"]  # the upstream's own id, passed through untouched
        assert upstream_id.startswith("req_") and upstream_id != request_id
        line = access_line(json_gateway, request_id)
        assert line["logger"] == "gateway.access" and line["level"] == "info"
        assert line["method"] == raw.http_request.method and line["path"] == path
        assert line["status"] == 200 and line["conversation_id"] == conversation
        assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
        assert line["upstream_request_id"] == upstream_id
        assert "incomplete" not in line
        row = wait_for(lambda rid=request_id: attempt_row(database_url, rid), "the attempt row")
        assert row["upstream_request_id"] == upstream_id
    log = json_gateway.log()
    assert api_key not in log and "secret words" not in log  # no tokens, no message contents
    assert all(line["time"].endswith("Z") for line in json_lines(json_gateway))


def test_gateway_errors_carry_a_request_id_and_are_logged(json_gateway: ServerProcess, api_key: str) -> None:
    bad = httpx.post(
        json_gateway.url + CHAT,
        headers={"Authorization": f"Bearer {api_key}", "X-Conversation-Id": "not valid!"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert bad.status_code == 400
    line = access_line(json_gateway, bad.headers["x-gateway-request-id"])
    assert line["status"] == 400 and line["conversation_id"] == "not valid!"
    assert line["upstream_request_id"] is None
    ids = {httpx.get(json_gateway.url + "/healthz").headers["x-gateway-request-id"] for _ in range(3)}
    assert len(ids) == 3

    # uvicorn's own error log goes through the same handler: a JSON line too
    with socket.create_connection(("127.0.0.1", json_gateway.port)) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert raw.recv(1024).startswith(b"HTTP/1.1 400")
    uvicorn = wait_for(
        lambda: [x for x in json_lines(json_gateway) if x["logger"].startswith("uvicorn")], "uvicorn's log"
    )
    assert uvicorn[0]["level"] == "warning"


def test_client_leaving_a_stream_is_logged_and_leaves_no_stream_in_flight(
    json_gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    headers = {"X-Conversation-Id": conversation_id}
    with OpenAI(
        base_url=json_gateway.url + "/v1", api_key=api_key, default_headers=headers, max_retries=0
    ) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "FAULT:stall-stream"}], stream=True
        )
        stream = raw.parse()
        next(iter(stream))
        assert scrape(json_gateway)[("gateway_streams_in_flight", frozenset())] == 1
        stream.close()  # the client goes away while the upstream stalls
    line = access_line(json_gateway, raw.headers["x-gateway-request-id"])
    assert line["status"] == 200 and line["incomplete"] is True
    wait_for(lambda: scrape(json_gateway)[("gateway_streams_in_flight", frozenset())] == 0, "the gauge at 0")


def assert_text_access_line(server: ServerProcess, response: httpx.Response, conversation_id: str) -> None:
    """The request's access line is a text line with its fields as key=value."""
    request_id = response.headers["x-gateway-request-id"]

    def find() -> str | None:
        lines = [x for x in server.log().splitlines() if f"request_id={request_id}" in x]
        return lines[0] if lines else None

    line = wait_for(find, "the text access log line")
    assert " INFO gateway.access request " in line
    for part in ("method=POST", f"path={CHAT}", "status=200", f"conversation_id={conversation_id}"):
        assert part in line.split(), part
    assert f"upstream_request_id={response.headers['x-request-id']}" in line.split()
    assert "latency_ms=" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_workers_share_metrics_and_write_text_logs(
    upstream: ServerProcess, database_url: str, tmp_path: Path, api_key: str, conversation_id: str
) -> None:
    # Several workers need Postgres; on SQLite one worker still runs the multiprocess code path.
    # The default log format is text; every worker (a fresh process) must set up logging itself.
    workers = "1" if database_url.startswith("sqlite") else "2"
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # a previous run's file: `serve` removes it
    server = gateway_server(tmp_path, upstream.url, database_url, workers=workers)
    server.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    server.start()
    try:
        for turn in range(6):
            # a new connection per request, so the kernel may hand them to different workers
            response = httpx.post(
                server.url + CHAT,
                headers={"Authorization": f"Bearer {api_key}", "X-Conversation-Id": conversation_id},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"turn {turn}"}]},
            )
            assert response.status_code == 200, response.text
            assert_text_access_line(server, response, conversation_id)
        for _ in range(6):  # whichever worker answers, it reports the sum of all
            samples = scrape(server)
            chat_ok = frozenset({"route": CHAT, "method": "POST", "status": "200"}.items())
            assert samples[("gateway_requests_total", chat_ok)] == 6
            assert samples[("gateway_lock_wait_seconds_count", frozenset())] == 6
            assert samples[("gateway_streams_in_flight", frozenset())] == 0
        assert not (metrics_dir / "counter_1.db").exists()
    finally:
        server.stop()


HI: Any = [{"role": "user", "content": "hi"}]


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

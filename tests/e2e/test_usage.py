"""End-to-end usage and cost: the gateway with a prices file, the mock upstream, the SDK and the CLI."""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from gateway.mock_upstream.replies import mock_reply, mock_usage, response_model
from gateway.tokens import count_message_tokens
from tests.helpers import MODEL, auth, run_command, sdk, user
from tests.servers import ServerProcess, base_env, gateway_app, upstream_requests

PRICES = {
    "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.6"},
    "o3-mini": {"input": "1.1", "cached_input": "0.55", "output": "4.4"},
    "text-embedding-3-small": {"input": "0.02", "output": "0"},
}
LONG = "lorem ipsum dolor " * 40  # enough prompt tokens for the mock to report cached tokens


@pytest.fixture(scope="module")
def priced(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway with a prices file (numbers written as JSON numbers, exactly as above)."""
    tmp = tmp_path_factory.mktemp("usage")
    path = tmp / "prices.json"
    path.write_text(
        "{"
        + ", ".join(
            f'"{model}": {{' + ", ".join(f'"{k}": {v}' for k, v in price.items()) + "}"
            for model, price in PRICES.items()
        )
        + "}"
    )
    server = gateway_app(upstream.url, database_url, prices_file=str(path)).start()
    try:
        yield server
    finally:
        server.stop()


def get(server: ServerProcess, api_key: str, path: str, **params: str) -> httpx.Response:
    return httpx.get(server.url + path, params=params, headers={"Authorization": f"Bearer {api_key}"})


def exact(response: httpx.Response) -> Any:
    """The JSON body with its numbers as exact Decimals."""
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)


def totals(response: httpx.Response) -> Any:
    """The ungrouped report's one row (keyed `total`), with exact numbers."""
    report = exact(response)
    assert report["object"] == "list" and [row["key"] for row in report["data"]] == ["total"]
    return report["data"][0]


def price_of(model: str) -> dict[str, Decimal]:
    """The file's price of a returned model: the longest entry that is a prefix of it."""
    key = max((k for k in PRICES if model.startswith(k)), key=len)
    entry = PRICES[key]
    return {
        "input": Decimal(entry["input"]),
        "cached_input": Decimal(entry.get("cached_input", entry["input"])),
        "output": Decimal(entry["output"]),
    }


def expected_calls(upstream: ServerProcess, api_key: str) -> list[dict[str, Any]]:
    """What each chat call the mock received reported, by the mock's own formula (None: no usage)."""
    calls = []
    for request in upstream_requests(upstream, api_key):
        body = request["body"]
        messages = body["messages"]
        failed = "FAULT:500" in messages[-1]["content"]
        calls.append(
            {
                "model": body["model"] if failed else response_model(body["model"]),
                "usage": None if failed else mock_usage(messages, mock_reply(messages), body["model"]),
                "history": sum(count_message_tokens(m, body["model"]) for m in messages[:-1]),
            }
        )
    return calls


def expected_costs(call: dict[str, Any]) -> tuple[Decimal, int]:
    """(cost in USD, history cost in picodollars) of one call, from the prices file."""
    usage, price = call["usage"], price_of(call["model"])
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    input_cost = ((prompt - cached) * price["input"] + cached * price["cached_input"]) / 1_000_000
    cost = input_cost + completion * price["output"] / 1_000_000
    history = input_cost * min(call["history"], prompt) / prompt
    return cost, int((history * 10**12).to_integral_value())


def test_conversation_usage_is_what_the_upstream_reported(
    priced: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    with sdk(priced, api_key, conversation_id, max_retries=0) as client:
        first = client.chat.completions.create(model="gpt-4o-mini", messages=[user(LONG)])
        list(client.chat.completions.create(model="gpt-4o-mini", messages=[user("streamed")], stream=True))
        chunks = list(
            client.chat.completions.create(
                model="o3-mini", messages=[user("think")], stream=True, stream_options={"include_usage": True}
            )
        )
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[user("FAULT:500")])
        with pytest.raises(openai.APIError):  # the stream ends after its usage chunk, without [DONE]
            list(
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[user("FAULT:cut-after-usage")], stream=True
                )
            )
        last = client.chat.completions.create(model="gpt-4o-mini", messages=[user("last")])
    calls = expected_calls(upstream, api_key)
    assert len(calls) == 6
    # The mock's formula is what the SDK saw where the client could see usage.
    assert first.usage is not None and first.usage.model_dump(exclude_none=True) == calls[0]["usage"] | {
        "prompt_tokens_details": {
            "cached_tokens": calls[0]["usage"]["prompt_tokens_details"]["cached_tokens"]
        },
    }
    assert calls[0]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens_details is not None
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 8
    assert last.usage is not None and last.usage.prompt_tokens == calls[5]["usage"]["prompt_tokens"]

    usage = exact(get(priced, api_key, f"/v1/conversations/{conversation_id}/usage"))
    reported = [c for c in calls if c["usage"] is not None]
    assert usage["conversation_id"] == conversation_id
    assert (
        usage["requests"] == 6 and usage["unreported_usage_requests"] == 1 and usage["unpriced_requests"] == 0
    )
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert usage[name] == sum(c["usage"][name] for c in reported), name
    assert usage["cached_tokens"] == sum(
        c["usage"]["prompt_tokens_details"]["cached_tokens"] for c in reported
    )
    assert usage["reasoning_tokens"] == 8
    assert usage["history_tokens"] == sum(c["history"] for c in reported) > 0
    costs = [expected_costs(c) for c in reported]
    assert usage["cost_usd"] == sum(cost for cost, _ in costs)
    assert usage["history_cost_usd"] == Decimal(sum(pusd for _, pusd in costs)).scaleb(-12)

    by_model = {m["model"]: m for m in usage["by_model"]}
    assert list(by_model) == ["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "o3-mini"]
    assert by_model["gpt-4o-mini"]["requests"] == 1 and by_model["gpt-4o-mini"]["cost_usd"] is None
    assert by_model["gpt-4o-mini"]["prompt_tokens"] is None  # the failed call reported nothing: null, not 0
    assert by_model["gpt-4o-mini-2024-07-18"]["requests"] == 4  # the cut stream's usage is in
    assert by_model["o3-mini"]["cost_usd"] == expected_costs(calls[2])[0]

    conversation = exact(get(priced, api_key, f"/v1/conversations/{conversation_id}"))
    assert conversation["usage"] == {k: v for k, v in usage.items() if k != "conversation_id"}


def test_an_unpriced_model_has_a_null_cost_and_is_counted(
    priced: ServerProcess, api_key: str, conversation_id: str
) -> None:
    with sdk(priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model="local-llama-3", messages=[user("hello")])
        path = f"/v1/conversations/{conversation_id}/usage"
        alone = exact(get(priced, api_key, path))
        assert alone["cost_usd"] is None and alone["history_cost_usd"] is None
        assert alone["unpriced_requests"] == 1 and alone["prompt_tokens"] > 0
        client.chat.completions.create(model="gpt-4o-mini", messages=[user("again")])
    mixed = exact(get(priced, api_key, path))
    by_model = {m["model"]: m for m in mixed["by_model"]}
    assert (
        mixed["unpriced_requests"] == 1
        and mixed["cost_usd"] == by_model["gpt-4o-mini-2024-07-18"]["cost_usd"]
    )
    assert (
        by_model["local-llama-3"]["cost_usd"] is None and by_model["local-llama-3"]["unpriced_requests"] == 1
    )


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_reports_by_conversation_model_and_day(priced: ServerProcess, api_key: str) -> None:
    texts = ["embed this text", "and this one too"]
    with (
        sdk(priced, api_key, "conv-a", max_retries=0) as a,
        sdk(priced, api_key, "conv-b", max_retries=0) as b,
        sdk(priced, api_key, max_retries=0) as plain,
    ):
        a.chat.completions.create(model="gpt-4o-mini", messages=[user("one")])
        b.chat.completions.create(model="gpt-4o-mini", messages=[user("two")])
        middle = datetime.now(UTC)
        plain.chat.completions.create(model="gpt-4o-mini", messages=[user("stateless")])
        plain.embeddings.create(model="text-embedding-3-small", input=texts)
        plain.models.list()
    conversations = exact(get(priced, api_key, "/v1/usage", group_by="conversation"))
    assert conversations["object"] == "list"
    assert [(row["key"], row["requests"]) for row in conversations["data"]] == [
        ("conv-a", 1),
        ("conv-b", 1),
        (None, 3),
    ]
    models = {row["key"]: row for row in exact(get(priced, api_key, "/v1/usage", group_by="model"))["data"]}
    assert list(models) == ["gpt-4o-mini-2024-07-18", "text-embedding-3-small", None]
    embedding = models["text-embedding-3-small"]
    tokens = sum(max(1, len(t) // 4) for t in texts)
    assert embedding["prompt_tokens"] == embedding["total_tokens"] == tokens
    assert embedding["cost_usd"] == tokens * Decimal("0.02") / 1_000_000
    assert models[None]["requests"] == 1 and models[None]["unreported_usage_requests"] == 1  # GET /v1/models
    days = exact(get(priced, api_key, "/v1/usage", group_by="day"))["data"]
    today = datetime.now(UTC).date()
    assert {row["key"] for row in days} <= {middle.date().isoformat(), today.isoformat()}
    assert sum(row["requests"] for row in days) == 5

    overall = totals(get(priced, api_key, "/v1/usage"))
    assert overall["requests"] == 5 and overall["unreported_usage_requests"] == 1
    assert overall["cost_usd"] == sum(
        row["cost_usd"] for row in models.values() if row["cost_usd"] is not None
    )
    after = totals(get(priced, api_key, "/v1/usage", since=iso(middle)))
    assert after["requests"] == 3
    before = totals(get(priced, api_key, "/v1/usage", until=middle.replace(tzinfo=None).isoformat()))
    assert before["requests"] == 2  # a time without zone is UTC
    whole_days = totals(get(priced, api_key, "/v1/usage", since=str(middle.date()), until=str(today)))
    assert whole_days["requests"] == 5
    assert totals(get(priced, "sk-someone-else", "/v1/usage"))["requests"] == 0


def test_csv_parses_and_matches_the_json(priced: ServerProcess, api_key: str, conversation_id: str) -> None:
    with sdk(priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[user("hi")])
        client.chat.completions.create(model="local-llama-3", messages=[user("hi")])
    response = get(priced, api_key, "/v1/usage", group_by="model", format="csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    data = exact(get(priced, api_key, "/v1/usage", group_by="model"))["data"]
    assert list(rows[0]) == ["key", *[k for k in data[0] if k not in ("key", "by_model")]]
    assert len(rows) == len(data) == 2
    for row, item in zip(rows, data, strict=True):
        for name, value in row.items():
            assert value == ("" if item[name] is None else str(item[name])), name
    assert rows[1]["key"] == "local-llama-3" and rows[1]["cost_usd"] == ""


def run_gateway(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m gateway ARGS` as a process with extra environment variables (for `serve`)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=base_env() | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli(database_url: str, *args: str) -> str:
    """Run `python -m gateway usage ...` against the gateway's database; return what it printed."""
    result = run_command("usage", "--database-url", database_url, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_cli_agrees_with_the_api(
    priced: ServerProcess, database_url: str, api_key: str, conversation_id: str
) -> None:
    since = iso(datetime.now(UTC))
    with sdk(priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[user("hi")])
        list(client.chat.completions.create(model="gpt-4o-mini", messages=[user("more")], stream=True))
        client.chat.completions.create(model="local-llama-3", messages=[user("local")])
    api = exact(get(priced, api_key, f"/v1/conversations/{conversation_id}/usage"))
    assert (
        json.loads(
            cli(database_url, "--conversation", conversation_id, "--format", "json"), parse_float=Decimal
        )
        == api
    )
    # Across callers, but nothing else happened since `since`.
    grouped = cli(database_url, "--group-by", "model", "--since", since, "--format", "json")
    assert json.loads(grouped, parse_float=Decimal) == exact(
        get(priced, api_key, "/v1/usage", group_by="model", since=since)
    )
    csv_text = cli(database_url, "--group-by", "day", "--since", since, "--format", "csv")
    api_csv = get(priced, api_key, "/v1/usage", group_by="day", since=since, format="csv").text
    assert list(csv.reader(io.StringIO(csv_text))) == list(csv.reader(io.StringIO(api_csv)))
    assert len(api_csv.splitlines()) == 2
    table = cli(database_url, "--conversation", conversation_id).splitlines()
    assert table[0] == f"conversation {conversation_id}"
    assert [line.split()[0] for line in table[2:5]] == ["gpt-4o-mini-2024-07-18", "local-llama-3", "TOTAL"]
    assert table[3].split()[8] == "n/a"  # the local model's cost
    assert any("no known price" in line for line in table)


def test_cli_rejects_bad_options(tmp_path: Any) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    result = run_command("usage", "--database-url", database_url, "--since", "soon")
    assert result.returncode == 2 and "--since" in result.stderr
    missing = run_command("usage", "--database-url", database_url)
    assert missing.returncode == 1 and "no gateway database" in missing.stderr
    assert not (tmp_path / "gateway.db").exists()  # never creates an empty database


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"format": "xml"}, "format"),
        ({"since": "last tuesday"}, "since"),
        ({"until": "2024-02-30"}, "until"),
        ({"since": "2024-05-02", "until": "2024-05-01"}, "until"),
    ],
)
def test_bad_report_parameters_are_400(priced: ServerProcess, params: dict[str, str], param: str) -> None:
    response = get(priced, "sk-anyone", "/v1/usage", **params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_conversation_usage_is_404_for_unknown_and_other_callers(
    priced: ServerProcess, api_key: str, conversation_id: str
) -> None:
    with sdk(priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[user("mine")])
    assert get(priced, api_key, f"/v1/conversations/{conversation_id}/usage").status_code == 200
    for key, conversation in (("sk-intruder", conversation_id), (api_key, "conv-never-seen")):
        response = get(priced, key, f"/v1/conversations/{conversation}/usage")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_stateless_streams_report_usage_when_the_client_asks(priced: ServerProcess, api_key: str) -> None:
    # Without a conversation the body reaches the upstream exactly as sent: usage only if asked for.
    with sdk(priced, api_key, max_retries=0) as client:
        list(client.chat.completions.create(model="gpt-4o-mini", messages=[user("quiet")], stream=True))
        options: Any = {"include_usage": True}
        list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[user("count")], stream=True, stream_options=options
            )
        )
    overall = totals(get(priced, api_key, "/v1/usage"))
    assert overall["requests"] == 2 and overall["unreported_usage_requests"] == 1
    assert (
        overall["prompt_tokens"] > 0 and overall["history_tokens"] == 0 and overall["history_cost_usd"] == 0
    )


def test_a_pass_through_call_that_cannot_reach_the_upstream_is_recorded(
    start_gateway: Any, tmp_path: Any, api_key: str
) -> None:
    from tests.servers import free_port

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    broken = start_gateway(database_url, upstream_url=f"http://127.0.0.1:{free_port()}/v1")
    with sdk(broken, api_key, max_retries=0) as client, pytest.raises(openai.APIError):
        client.models.list()
    overall = totals(get(broken, api_key, "/v1/usage"))
    assert overall["requests"] == 1 and overall["unreported_usage_requests"] == 1


def test_serve_refuses_a_bad_prices_file(tmp_path: Any) -> None:
    path = tmp_path / "prices.json"
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    path.write_text('{"gpt-4o-mini": {"input": 0.15}}')
    result = run_gateway("serve", "--database-url", database_url, GATEWAY_PRICES_FILE=str(path))
    assert result.returncode == 2
    assert "GATEWAY_PRICES_FILE" in result.stderr and "lacks output" in result.stderr


USAGE_FIELDS = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "history_tokens",
    "cost_usd",
    "history_cost_usd",
    "unpriced_requests",
]
# Two entries where one is a prefix of the other: the longest prefix must win.
PREFIX_PRICES = {
    "gpt-4o": {"input": "2.5", "cached_input": "1.25", "output": "10"},
    "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.6"},
}


# ---------------------------------------------------------------- Usage and cost


@pytest.fixture(scope="module")
def prefix_priced(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A gateway whose prices file has both `gpt-4o` and `gpt-4o-mini`."""
    tmp = tmp_path_factory.mktemp("bb-usage")
    path = tmp / "prices.json"
    path.write_text(json.dumps({m: {k: float(v) for k, v in p.items()} for m, p in PREFIX_PRICES.items()}))
    server = gateway_app(
        upstream.url, database_url, prices_file=str(path), history_strategy="sliding"
    ).start()
    try:
        yield server
    finally:
        server.stop()


def report(server: ServerProcess, api_key: str, path: str, **params: str) -> Any:
    response = httpx.get(server.url + path, params=params, headers=auth(api_key))
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)


def file_cost(model: str, usage: dict[str, Any]) -> Decimal:
    price = {k: Decimal(v) for k, v in PREFIX_PRICES[model].items()}
    prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    cached = int(usage["prompt_tokens_details"]["cached_tokens"])
    total: Decimal = (
        (prompt - cached) * price["input"] + cached * price["cached_input"] + completion * price["output"]
    )
    return total / 1_000_000


def check_usage_object(usage: dict[str, Any]) -> None:
    assert set(usage) >= {*USAGE_FIELDS, "by_model"}
    for entry in usage["by_model"]:
        assert set(entry) >= {"model", *USAGE_FIELDS}


def test_the_longest_prefix_in_the_prices_file_wins(
    prefix_priced: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'gpt-4o-mini-2024-07-18 takes gpt-4o-mini, not gpt-4o'; the cost matches the file exactly."""
    long = "lorem ipsum dolor " * 40
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        for model in ("gpt-4o-mini", "gpt-4o"):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": long + model}])
    usage = report(prefix_priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    check_usage_object(usage)
    assert usage["conversation_id"] == conversation_id
    by_model = {entry["model"]: entry for entry in usage["by_model"]}
    assert set(by_model) == {"gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"}
    sent = upstream_requests(upstream, api_key)
    for request, (dated, key) in zip(
        sent, [("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), ("gpt-4o-2024-08-06", "gpt-4o")], strict=True
    ):
        messages = request["body"]["messages"]
        upstream_usage = mock_usage(messages, mock_reply(messages), request["body"]["model"])
        assert upstream_usage["prompt_tokens_details"]["cached_tokens"] > 0
        assert by_model[dated]["cost_usd"] == file_cost(key, upstream_usage)
    assert usage["cost_usd"] == sum(e["cost_usd"] for e in usage["by_model"])
    assert usage["unpriced_requests"] == 0


def test_streaming_is_counted_like_non_streaming_and_failures_count_as_requests(
    prefix_priced: ServerProcess, api_key: str
) -> None:
    """'Streaming calls are counted exactly like non-streaming ones'; failed calls count as requests."""
    a, b = f"conv-a-{secrets.token_hex(4)}", f"conv-b-{secrets.token_hex(4)}"
    with sdk(prefix_priced, api_key, a, max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "same words"}])
    with sdk(prefix_priced, api_key, b, max_retries=0) as client:
        list(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "same words"}], stream=True
            )
        )
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "FAULT:500"}])
    plain = report(prefix_priced, api_key, f"/v1/conversations/{a}/usage")
    streamed = report(prefix_priced, api_key, f"/v1/conversations/{b}/usage")
    assert plain["requests"] == 1 and streamed["requests"] == 2
    for field in USAGE_FIELDS:
        if field != "requests":
            assert streamed[field] == plain[field], field
    # The history of b holds only the streamed turn: the failure added nothing.
    assert (
        httpx.get(f"{prefix_priced.url}/v1/conversations/{b}", headers=auth(api_key)).json()["message_count"]
        == 2
    )


def test_history_tokens_and_history_cost_are_reported(
    prefix_priced: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    """'reports show it beside the totals (history_tokens, history_cost_usd)'."""
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "first " * 50}])
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "second"}])
    usage = report(prefix_priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    sent = upstream_requests(upstream, api_key)[-1]["body"]["messages"]
    assert usage["history_tokens"] == sum(count_message_tokens(m, MODEL) for m in sent[:-1])
    assert usage["history_cost_usd"] > 0
    assert usage["history_cost_usd"] < usage["cost_usd"]
    assert usage["by_model"][0]["history_tokens"] == usage["history_tokens"]


def test_unknown_prices_are_null_and_an_empty_csv_cell(
    prefix_priced: ServerProcess, conversation_id: str
) -> None:
    """'cost_usd is null (never 0) and the request is counted in unpriced_requests'; CSV: an empty cell."""
    api_key = f"sk-unpriced-{secrets.token_hex(6)}"
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model="my-local-model", messages=[{"role": "user", "content": "x"}])
    usage = report(prefix_priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    assert usage["cost_usd"] is None and usage["unpriced_requests"] == 1
    assert usage["history_cost_usd"] is None  # no price: no history cost either, never 0
    assert usage["by_model"][0]["model"] == "my-local-model" and usage["by_model"][0]["cost_usd"] is None
    response = httpx.get(
        f"{prefix_priced.url}/v1/usage", params={"group_by": "model", "format": "csv"}, headers=auth(api_key)
    )
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text)))
    header = rows[0]
    assert header[0] == "key" and header[1 : 1 + len(USAGE_FIELDS)] == USAGE_FIELDS
    assert len(rows) == 2
    row = dict(zip(header, rows[1], strict=True))
    assert row["key"] == "my-local-model" and row["cost_usd"] == "" and row["requests"] == "1"


def test_usage_list_shape_day_keys_and_since_until(
    prefix_priced: ServerProcess, conversation_id: str
) -> None:
    """'{"object": "list", "data": [{"key", ...}]}', day keys YYYY-MM-DD, since/until dates or times."""
    api_key = f"sk-days-{secrets.token_hex(6)}"
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "today"}])
    now = datetime.now(UTC)
    today, tomorrow = now.date().isoformat(), (now + timedelta(days=1)).date().isoformat()
    by_day = report(prefix_priced, api_key, "/v1/usage", group_by="day")
    assert by_day["object"] == "list"
    assert [row["key"] for row in by_day["data"]] == [today]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", by_day["data"][0]["key"])
    check_usage_object(by_day["data"][0])
    by_conversation = report(prefix_priced, api_key, "/v1/usage", group_by="conversation")
    assert [row["key"] for row in by_conversation["data"]] == [conversation_id]
    hour_ago = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    offset = (now - timedelta(hours=1)).astimezone(timezone(timedelta(hours=2))).isoformat()
    windows = {
        (today, None): 1,
        (tomorrow, None): 0,
        (None, today): 1,  # README: a date `until` includes that whole day
        (None, tomorrow): 1,
        (hour_ago, None): 1,
        (offset, None): 1,
        (None, hour_ago): 0,
    }
    for (since, until), expected in windows.items():
        params = {k: v for k, v in {"since": since, "until": until}.items() if v}
        data = report(prefix_priced, api_key, "/v1/usage", group_by="day", **params)["data"]
        requests = sum(row["requests"] for row in data)
        assert requests == expected, (since, until, data)


def test_an_upstream_without_usage_is_null_never_zero(
    prefix_priced: ServerProcess, conversation_id: str
) -> None:
    """'If an upstream reports no usage at all, record null, never a made-up 0, and say so in reports.'"""
    api_key = f"sk-nousage-{secrets.token_hex(6)}"
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "FAULT:nousage"}])
    usage = report(prefix_priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    assert usage["requests"] == 1
    for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
        assert usage[field] is None, (field, usage)
    assert usage["unreported_usage_requests"] == 1  # the report says so
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "with usage"}])
    usage = report(prefix_priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    assert usage["requests"] == 2 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["unreported_usage_requests"] == 1


def test_a_deleted_conversation_keeps_counting_in_reports(
    prefix_priced: ServerProcess, conversation_id: str
) -> None:
    """'its request-log rows keep their usage figures for cost reports'; reports are scoped to the caller."""
    api_key = f"sk-deleted-{secrets.token_hex(6)}"
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "soon gone"}])
    before = report(prefix_priced, api_key, "/v1/usage", group_by="conversation")["data"]
    deleted = httpx.delete(f"{prefix_priced.url}/v1/conversations/{conversation_id}", headers=auth(api_key))
    assert deleted.status_code == 200
    after = report(prefix_priced, api_key, "/v1/usage", group_by="conversation")["data"]
    assert after == before and after[0]["key"] == conversation_id and after[0]["requests"] == 1
    other = report(prefix_priced, f"sk-nobody-{secrets.token_hex(6)}", "/v1/usage", group_by="conversation")
    assert other == {"object": "list", "data": []}


def test_every_call_counts_and_by_model_adds_up(prefix_priced: ServerProcess, conversation_id: str) -> None:
    """Streams with include_usage off, a broken stream and an error all count; by_model sums to the totals."""
    api_key = f"sk-sums-{secrets.token_hex(6)}"
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "quiet stream"}],
                stream=True,
                stream_options={"include_usage": False},
            )
        )
        assert all(chunk.usage is None for chunk in chunks)  # not forwarded, but still counted
        with pytest.raises(openai.APIError):
            list(
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "FAULT:cut"}], stream=True
                )
            )
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="o3-mini", messages=[{"role": "user", "content": "FAULT:503"}]
            )
    usage = report(prefix_priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    assert usage["requests"] == 3
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert sum(entry["requests"] for entry in usage["by_model"]) == 3
    for field in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "total_tokens"):
        assert sum(entry[field] or 0 for entry in usage["by_model"]) == usage[field], field


def test_the_usage_cli_flags(prefix_priced: ServerProcess, database_url: str, conversation_id: str) -> None:
    """'sliding usage [--conversation ID] [--group-by ...] [--since ...] [--format table|json|csv]'."""
    api_key = f"sk-cli-{secrets.token_hex(6)}"
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "cli"}])
    api = report(prefix_priced, api_key, f"/v1/conversations/{conversation_id}/usage")
    as_json = run_command(
        "usage", "--conversation", conversation_id, "--format", "json", GATEWAY_DATABASE_URL=database_url
    )
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout, parse_float=Decimal)["requests"] == api["requests"] == 1
    as_csv = run_command(
        "usage", "--group-by", "conversation", "--format", "csv", GATEWAY_DATABASE_URL=database_url
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    mine = [row for row in rows if row["key"] == conversation_id]
    assert len(mine) == 1 and Decimal(mine[0]["cost_usd"]) == api["cost_usd"]
    future = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    later = run_command(
        "usage", "--group-by", "day", "--since", future, "--format", "json", GATEWAY_DATABASE_URL=database_url
    )
    assert later.returncode == 0 and json.loads(later.stdout)["data"] == []
    table = run_command("usage", "--group-by", "model", GATEWAY_DATABASE_URL=database_url)
    assert table.returncode == 0 and "gpt-4o-mini-2024-07-18" in table.stdout
    assert not table.stdout.lstrip().startswith(("{", "["))


def test_the_usage_cli_for_one_conversation_by_day(
    prefix_priced: ServerProcess, database_url: str, conversation_id: str
) -> None:
    """--conversation with --group-by and --format csv together."""
    api_key = f"sk-cliday-{secrets.token_hex(6)}"
    with sdk(prefix_priced, api_key, conversation_id, max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "d"}])
    result = run_command(
        "usage",
        "--conversation",
        conversation_id,
        "--group-by",
        "day",
        "--format",
        "csv",
        GATEWAY_DATABASE_URL=database_url,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["key"] for row in rows] == [datetime.now(UTC).date().isoformat()]
    assert rows[0]["requests"] == "1"

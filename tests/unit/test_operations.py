"""Unit tests: log formatters, the metrics of an attempt, the logging and metrics settings."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import values as prometheus_values
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ConfigError, Settings
from gateway.logs import TEXT_FORMAT, JsonFormatter, TextFormatter
from gateway.metrics import TOKEN_KINDS, Metrics
from gateway.money import usd
from tests.helpers import logged_call


def record(fields: dict[str, object] | None = None, exc: bool = False) -> logging.LogRecord:
    """A log record like the access log writes."""
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request %s", ("x",), exc_info)
    if fields is not None:
        made.fields = fields
    return made


def test_json_lines_put_fields_at_the_top_level() -> None:
    line = json.loads(JsonFormatter().format(record({"status": 200, "level": "spoofed", "path": "/v1/x"})))
    assert line["message"] == "request x"
    assert line["logger"] == "gateway.access"
    assert line["level"] == "info"  # a field never overrides the record's own keys
    assert line["status"] == 200 and line["path"] == "/v1/x"
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_json_lines_carry_exceptions_on_one_line() -> None:
    text = JsonFormatter().format(record(exc=True))
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]


def test_text_lines_append_fields_and_quote_what_needs_it() -> None:
    fields = {"request_id": "abc", "conversation_id": "has space", "upstream_request_id": None, "ms": 1.5}
    text = TextFormatter().format(record(fields))
    assert text.endswith(' INFO gateway.access request x request_id=abc conversation_id="has space" ms=1.5')
    assert TextFormatter().format(record()).endswith("INFO gateway.access request x")


def test_text_lines_keep_a_traceback_on_its_own_lines_with_every_other_break_escaped() -> None:
    try:
        raise ValueError("boom\u2028INFO forged\rline")
    except ValueError:
        made = logging.LogRecord("gateway.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    text = TextFormatter().format(made)
    lines = text.split("\n")
    assert lines[0].endswith("ERROR gateway.x failed") and lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom\\u2028INFO forged\\rline"
    assert text.splitlines() == lines  # no break but the traceback's own


@pytest.mark.parametrize(
    "created", [0.0, 1_767_225_599.999, 1_767_225_600.0004, 1_767_225_600.5, 1_767_225_601.25]
)
def test_the_time_made_once_per_second_is_the_time_logging_writes(created: float) -> None:
    text, json_formatter, standard = TextFormatter(), JsonFormatter(), logging.Formatter(TEXT_FORMAT)
    for at in (created, created + 0.2, created - 1.0, created):  # the same second, another, back again
        made = record()
        made.created, made.msecs = at, int((at - int(at)) * 1000) + 0.0
        assert text.formatTime(made) == standard.formatTime(made)
        assert text.formatTime(made, "%H:%M") == standard.formatTime(made, "%H:%M")
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
        assert json.loads(json_formatter.format(made))["time"] == f"{seconds}.{int(made.msecs):03d}Z"


def test_text_fields_of_every_type() -> None:
    fields = {"a": 200, "b": True, "c": 1.5, "d": "x y", "e": ["l"], "f": None, "g": "plain", "h": 10**20}
    text = TextFormatter().format(record(fields))
    assert text.endswith(' request x a=200 b=true c=1.5 d="x y" e=["l"] g=plain h=100000000000000000000')


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One sample of the metrics' exposition, None when absent."""
    for family in text_string_to_metric_families(metrics.render().decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None


def test_an_attempt_adds_its_tokens_and_cost_by_response_model() -> None:
    metrics = Metrics()
    attempt = logged_call(
        "owner",
        model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
        prompt_tokens=100,
        completion_tokens=20,
        cached_tokens=64,
        reasoning_tokens=0,
        history_tokens=30,
        cost_pusd=2_500_000,
        history_cost_pusd=500_000,
    )
    metrics.observe_attempt(attempt)
    metrics.observe_attempt(attempt)
    model = "gpt-4o-mini-2024-07-18"
    expected = {"prompt": 200, "completion": 40, "cached": 128, "reasoning": 0, "history": 60}
    for kind, value in expected.items():
        assert sample(metrics, "gateway_tokens_total", model=model, kind=kind) == value
    assert sample(metrics, "gateway_cost_usd_total", model=model) == pytest.approx(5e-6)
    assert sample(metrics, "gateway_history_cost_usd_total", model=model) == pytest.approx(1e-6)


def test_an_attempt_without_usage_or_price_counts_nothing_unknown() -> None:
    metrics = Metrics()
    metrics.observe_attempt(logged_call("owner", model="x"))
    metrics.observe_attempt(logged_call("owner", model="mystery", prompt_tokens=7))
    assert sample(metrics, "gateway_tokens_total", model="x", kind="prompt") is None
    assert sample(metrics, "gateway_tokens_total", model="mystery", kind="prompt") == 7
    assert sample(metrics, "gateway_cost_usd_total", model="mystery") is None  # unknown price: not 0


def test_each_app_has_its_own_registry_and_children_are_reused() -> None:
    first, second = Metrics(), Metrics()
    first.observe_request("/healthz", "GET", 200, 0.001)
    first.observe_request("/healthz", "GET", 200, 0.002)
    assert sample(first, "gateway_requests_total", route="/healthz", method="GET", status="200") == 2
    assert sample(second, "gateway_requests_total", route="/healthz", method="GET", status="200") is None
    adder = first._add(first.requests, "/a", "GET", "200")
    assert first._add(first.requests, "/a", "GET", "200") is adder
    observer = first._observe(first.request_seconds, "/a")
    assert first._observe(first.request_seconds, "/a") is observer


# Bucket bounds (a value on a bound counts in that bucket), values between them, and past the last.
SECONDS = [0.0, 0.0004, 0.0005, 0.0007, 0.05, 0.07, 1.0, 59.9, 60.0, 600.0, 1e6]


def _fed(metrics: Metrics, fast: bool) -> bytes:
    """The gateway's families after the same observations, through the gateway's increments (`fast`) or
    through prometheus-client's public `inc` and `observe`."""
    attempt = logged_call(
        "owner", prompt_tokens=100, completion_tokens=20, cached_tokens=64, reasoning_tokens=0,
        history_tokens=30, cost_pusd=2_500_001, history_cost_pusd=333_333_333,
    )  # fmt: skip
    for seconds in SECONDS:
        if fast:
            metrics.observe_request("/v1/x", "POST", 200, seconds)
            metrics.observe_upstream("/v1/x", seconds)
            metrics.observe_lock_wait(seconds)
            metrics.observe_attempt(attempt)
            continue
        metrics.requests.labels("/v1/x", "POST", "200").inc()
        metrics.request_seconds.labels("/v1/x").observe(seconds)
        metrics.upstream_seconds.labels("/v1/x").observe(seconds)
        metrics.lock_wait.observe(seconds)
        for kind, value in zip(TOKEN_KINDS, (100, 20, 64, 0, 30), strict=True):
            metrics.tokens.labels("gpt-4o-mini", kind).inc(value)
        metrics.cost.labels("gpt-4o-mini").inc(float(usd(2_500_001)))
        metrics.history_cost.labels("gpt-4o-mini").inc(float(usd(333_333_333)))
    lines = metrics.render().decode().splitlines()
    kept = [line for line in lines if line.startswith("gateway_") and "_created" not in line.split(" ")[0]]
    return "\n".join(kept).encode()  # (`_created`: when each child was made, which differs)


@pytest.mark.parametrize("multiprocess", [False, True], ids=["one process", "multiprocess files"])
def test_the_gateways_increments_change_what_the_public_calls_would(
    multiprocess: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exposed = []
    for fast in (True, False):
        directory = None
        if multiprocess:  # values in mmapped files, as `gateway serve --workers N` keeps them
            directory = tmp_path / ("fast" if fast else "public")
            directory.mkdir()
            monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
            monkeypatch.setattr(prometheus_values, "ValueClass", prometheus_values.MultiProcessValue())
        exposed.append(_fed(Metrics(None if directory is None else str(directory)), fast))
    assert b'gateway_lock_wait_seconds_bucket{le="0.0005"} 3.0' in exposed[0]
    assert exposed[0] == exposed[1]


def test_log_and_metrics_settings() -> None:
    settings = Settings.from_env(
        {"GATEWAY_LOG_FORMAT": "JSON", "GATEWAY_LOG_LEVEL": "debug", "PROMETHEUS_MULTIPROC_DIR": "/tmp/prom"}
    )
    assert (settings.log_format, settings.log_level, settings.metrics_dir) == ("json", "DEBUG", "/tmp/prom")
    assert Settings.from_env({}).metrics_dir is None
    with pytest.raises(ConfigError, match="GATEWAY_LOG_LEVEL"):
        Settings.from_env({"GATEWAY_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="GATEWAY_LOG_FORMAT"):
        Settings.from_env({"GATEWAY_LOG_FORMAT": "xml"})

"""Hostile values in settings, tokens and reports: credentials in the upstream URL, CSV cells, allow lists."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.config import ConfigError, Settings
from gateway.identity import bearer_token
from gateway.ownership import classify, references
from gateway.reports import Group, Report, Totals, render_csv


@pytest.mark.parametrize(
    "url", ["http://user:secretpw@127.0.0.1:9000/v1", "https://sk-abc@api.example.com", "http://:pw@h/v1"]
)
def test_an_upstream_url_with_credentials_is_refused_at_start_in_one_line(url: str, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="credentials"
    ):  # first, so that this fails fast where it is accepted
        Settings.from_env({"GATEWAY_UPSTREAM_URL": url})
    database = f"sqlite+aiosqlite:///{tmp_path / 'never.db'}"
    result = CliRunner().invoke(main, ["serve", "--upstream", url, "--database-url", database, "--port", "1"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "credentials" in lines[0]
    assert "secretpw" not in result.output and "sk-abc" not in result.output
    assert not (tmp_path / "never.db").exists()


def test_the_new_settings_are_read_from_the_environment() -> None:
    env = {
        "GATEWAY_PROXY_ALLOW": "/v1/evals, v1/realtime/ ,organization",
        "GATEWAY_MAX_CONVERSATIONS_PER_CALLER": "50",
        "GATEWAY_METRICS_KEY": "m-key",
        "GATEWAY_TOKEN_CHECK_SECONDS": "0",
    }
    settings = Settings.from_env(env)
    assert settings.proxy_allow == ("evals", "realtime", "organization")
    assert settings.max_conversations_per_caller == 50 and settings.metrics_key == "m-key"
    assert settings.token_check_seconds == 0
    defaults = Settings.from_env({})
    assert defaults.max_conversations_per_caller == 10_000 and defaults.metrics_key is None
    with pytest.raises(ConfigError):
        Settings.from_env({"GATEWAY_PROXY_ALLOW": "/v1/../admin"})


def test_bearer_tokens_lose_only_ascii_whitespace() -> None:
    assert bearer_token(" Bearer \tsk-abc \r\n") == "sk-abc"
    assert bearer_token("Bearer sk-abc\u0085") == "sk-abc\u0085"
    assert bearer_token("Bearer sk-abc\u00a0") == "sk-abc\u00a0"


def test_csv_cells_are_defused_in_comma_and_semicolon_locales() -> None:
    starts = ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", ";=1+1", "x;=1+1", 'a"b,c']
    report = Report([Group(key, {"m": Totals(requests=1)}) for key in starts], "model")
    text = render_csv(report)
    keys = [row["key"] for row in csv.DictReader(io.StringIO(text))]
    assert keys == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\t=1", "'\r=1", "';=1+1", "x;=1+1", 'a"b,c']
    for row in list(csv.reader(io.StringIO(text), delimiter=";"))[1:]:  # a spreadsheet splitting on ';'
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row


def test_key_mode_endpoint_table() -> None:
    assert classify("POST", "files", ()).action == "create"
    assert classify("GET", "files", ()).action == "list"
    assert classify("GET", "files/file-1/content", ()).object_id == "file-1"
    assert classify("POST", "responses/input_tokens", ()).action == "create"
    assert classify("GET", "fine_tuning/jobs/ftjob-1/events", ()).object_id == "ftjob-1"
    assert classify("POST", "embeddings", ()).action == "plain"
    assert classify("GET", "models/gpt-4o", ()).action == "plain"
    assert classify("GET", "evals/e1", ("evals",)).action == "plain"
    for method, path in [
        ("DELETE", "models/ft:x"),
        ("GET", "evals"),
        ("POST", "threads/runs"),
        ("GET", "filesx"),
    ]:
        with pytest.raises(Exception, match="GATEWAY_PROXY_ALLOW"):
            classify(method, path, ())


def test_references_are_found_at_any_depth() -> None:
    body = {
        "previous_response_id": "resp_1",
        "input": [{"content": [{"type": "input_file", "file_id": "file-1"}]}],
        "tools": [{"type": "file_search", "vector_store_ids": ["vs_1", "vs_2"]}, {"container": "cntr_1"}],
        "conversation": {"id": "conv_1"},
        "metadata": {"note": "file-2"},
    }
    assert sorted(ref for _, ref in references(body)) == [
        "cntr_1",
        "conv_1",
        "file-1",
        "resp_1",
        "vs_1",
        "vs_2",
    ]

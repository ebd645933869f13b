"""The strategy settings: environment variables, conversation fields, the request header, the prompt file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.chat_request import parse_strategy_header
from gateway.config import ConfigError, Settings
from gateway.conversation_fields import CREATE_FIELDS, UPDATE_FIELDS, conversation_columns
from gateway.errors import InvalidRequest
from gateway.window import DEFAULT_SUMMARY_PROMPT, load_summary_prompt


def test_environment_defaults_and_values() -> None:
    default = Settings.from_env({})
    assert default.history_strategy == "stable" and default.history_trim_to == 0.5
    assert default.summary_model is None and default.prompt_cache_key is False
    assert default.summary_timeout == 60.0
    env = {
        "GATEWAY_HISTORY_STRATEGY": "Summarize",
        "GATEWAY_HISTORY_TRIM_TO": "0.25",
        "GATEWAY_SUMMARY_MODEL": "gpt-4o-mini",
        "GATEWAY_SUMMARY_PROMPT_FILE": "/etc/prompt.txt",
        "GATEWAY_SUMMARY_TIMEOUT": "5",
        "GATEWAY_PROMPT_CACHE_KEY": "1",
    }
    settings = Settings.from_env(env)
    assert settings.history_strategy == "summarize" and settings.history_trim_to == 0.25
    assert settings.summary_model == "gpt-4o-mini" and settings.summary_prompt_file == "/etc/prompt.txt"
    assert settings.summary_timeout == 5.0 and settings.prompt_cache_key is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_HISTORY_STRATEGY", "fifo"),
        ("GATEWAY_HISTORY_TRIM_TO", "1.5"),
        ("GATEWAY_HISTORY_TRIM_TO", "x"),
    ],
)
def test_bad_environment_values_stop_the_start(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_header_names_the_unknown_strategy() -> None:
    assert parse_strategy_header(None) is None
    assert parse_strategy_header(" Sliding ") == "sliding"
    with pytest.raises(InvalidRequest) as raised:
        parse_strategy_header("fifo")
    assert "'fifo'" in str(raised.value) and raised.value.param == "X-History-Strategy"


def test_conversation_fields() -> None:
    columns = conversation_columns({"history_strategy": "stable", "summary_model": "m"}, CREATE_FIELDS)
    assert columns == {"history_strategy": "stable", "summary_model": "m"}
    assert conversation_columns({"history_strategy": None, "summary": None}, UPDATE_FIELDS) == {
        "history_strategy": None,
        "summary_text": None,
    }
    for body, param in (
        ({"history_strategy": "lru"}, "history_strategy"),
        ({"history_strategy": 3}, "history_strategy"),
        ({"summary_model": ""}, "summary_model"),
        ({"summary": ""}, "summary"),
        ({"summary": ["x"]}, "summary"),
    ):
        with pytest.raises(InvalidRequest) as raised:
            conversation_columns(body, UPDATE_FIELDS)
        assert raised.value.param == param
    with pytest.raises(InvalidRequest) as raised:
        conversation_columns({"summary": "text"}, CREATE_FIELDS)  # the summary is edited, not created
    assert raised.value.param == "summary"


def test_summary_prompt_file(tmp_path: Path) -> None:
    assert load_summary_prompt(None) == DEFAULT_SUMMARY_PROMPT
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Keep only the numbers.\n")
    assert load_summary_prompt(str(prompt)) == "Keep only the numbers."
    prompt.write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        load_summary_prompt(str(prompt))
    with pytest.raises(ConfigError, match="cannot read"):
        load_summary_prompt(str(tmp_path / "missing.txt"))

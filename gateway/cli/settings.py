"""The CLI's one settings loader: the environment, then the flags a command was given."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import click

from gateway.config import ConfigError, Settings, normalize_upstream_url
from gateway.pricing import load_prices_file
from gateway.window import load_summary_prompt

DATABASE_OPTION = click.option("--database-url", default=None, help="SQLAlchemy URL (GATEWAY_DATABASE_URL).")


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, then the flags that were given."""
    try:
        settings = Settings.from_env(os.environ)
        given = {k: v for k, v in overrides.items() if v is not None}
        if "upstream_url" in given:
            given["upstream_url"] = normalize_upstream_url(given["upstream_url"])
        return dataclasses.replace(settings, **given)
    except ConfigError as exc:
        raise BadSetting(str(exc)) from exc


class BadSetting(click.ClickException):
    """A setting the gateway cannot use: a one-line error, exit status 2 (like a usage error)."""

    exit_code = 2


def check_prices_file(path: str | None) -> None:
    """Refuse to start on an unusable GATEWAY_PRICES_FILE, with the reason instead of a traceback."""
    if path is None:
        return
    try:
        load_prices_file(path)
    except ConfigError as exc:
        raise click.UsageError(f"GATEWAY_PRICES_FILE: {exc}") from None


def check_summary_prompt(path: str | None) -> None:
    """Refuse to start on an unreadable GATEWAY_SUMMARY_PROMPT_FILE, with the reason."""
    try:
        load_summary_prompt(path)
    except ConfigError as exc:
        raise click.UsageError(f"GATEWAY_SUMMARY_PROMPT_FILE: {exc}") from None

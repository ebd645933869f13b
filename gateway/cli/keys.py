"""`gateway keys create|list|revoke`: manage gateway keys in the configured database."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from sqlalchemy import Connection

from gateway import money
from gateway.cli.database import run_on_database
from gateway.cli.settings import DATABASE_OPTION, load_settings
from gateway.errors import GatewayError, InvalidRequest
from gateway.identity import caller_identity
from gateway.keys import MAX_BUDGET_USD, KeyInfo, new_secret, validate_key_name
from gateway.store.database import Database
from gateway.store.keys import insert_key, list_keys, revoke_key
from gateway.views import key_object, render_json

T = TypeVar("T")


def _run(database_url: str | None, unit: Callable[[Connection], T]) -> T:
    """Migrate the database if needed, then run `unit` (a unit of work) in one transaction."""

    async def in_transaction(db: Database) -> T:
        return await db.run(unit)

    try:
        return run_on_database(load_settings(database_url=database_url), in_transaction, migrated=True)
    except GatewayError as exc:  # broad: whatever the store refuses (a taken name, no database) is said
        raise click.ClickException(str(exc)) from exc


@click.group()
def keys() -> None:
    """Gateway keys: callers must present one when GATEWAY_UPSTREAM_API_KEY is set."""


@keys.command()
@click.argument("name")
@click.option(
    "--budget-usd", default=None, help="Refuse the key's calls once its recorded cost reaches this."
)
@DATABASE_OPTION
def create(name: str, budget_usd: str | None, database_url: str | None) -> None:
    """Create a key and print its secret (shown only this once; only its hash is stored)."""
    try:
        validate_key_name(name)
        budget = money.parse_usd(budget_usd, "--budget-usd", maximum=MAX_BUDGET_USD, text=True)
    except InvalidRequest as exc:
        raise click.BadParameter(str(exc)) from exc
    secret = new_secret()
    _run(database_url, lambda s: insert_key(s, name, caller_identity(secret), budget, time.time()))
    click.echo(f"Created key '{name}'. Its secret is shown only now; store it safely:", err=True)
    click.echo(secret)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _row(key: KeyInfo) -> list[str]:
    return [
        key.name,
        _when(key.created_at),
        _when(key.revoked_at),
        "-" if key.budget_pusd is None else money.fixed_text(key.budget_pusd),
        money.fixed_text(key.spent_pusd),
    ]


def _table(rows: list[list[str]]) -> str:
    header = ["NAME", "CREATED", "REVOKED", "BUDGET_USD", "SPENT_USD"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *rows]
    )


@keys.command("list")
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@DATABASE_OPTION
def list_command(output: str, database_url: str | None) -> None:
    """List the keys (never their secrets) with budget and spend."""
    found = _run(database_url, list_keys)
    if output == "json":
        data: dict[str, Any] = {"object": "list", "data": [key_object(k) for k in found]}
        click.echo(render_json(data, indent=2, separators=(",", ": ")))
        return
    click.echo(_table([_row(k) for k in found]))


@keys.command()
@click.argument("name")
@DATABASE_OPTION
def revoke(name: str, database_url: str | None) -> None:
    """Revoke a key: its caller is refused (401) within GATEWAY_KEY_CACHE_SECONDS."""
    found = _run(database_url, lambda s: revoke_key(s, name, time.time()))
    if found is None:
        raise click.ClickException(f"No key named '{name}'.")
    click.echo(f"Revoked key '{name}'.")

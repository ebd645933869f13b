"""`gateway keys create|list|revoke`: manage gateway keys in the configured database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.errors import GatewayError
from gateway.identity import caller_identity
from gateway.keys import KeyInfo, budget_pusd, key_object, new_secret, usd, validate_key_name

T = TypeVar("T")
DATABASE_OPTION = click.option("--database-url", default=None, help="SQLAlchemy URL (GATEWAY_DATABASE_URL).")


def _run(database_url: str | None, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Migrate the database if needed, then run `work` in one transaction."""
    from gateway import migrate
    from gateway.cli import load_settings
    from gateway.store.database import Database, create_engine

    settings = load_settings(database_url=database_url)

    async def run() -> T:
        engine = create_engine(settings.database_url, transaction_pooling=settings.db_transaction_pooling)
        try:
            await migrate.upgrade(engine)
            async with Database(engine, lease_seconds=60).transaction() as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except GatewayError as exc:
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
    from gateway.store.keys import insert_key

    try:
        validate_key_name(name)
        budget = budget_pusd(budget_usd, "--budget-usd")
    except GatewayError as exc:
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
    budget = usd(key.budget_pusd)
    return [
        key.name,
        _when(key.created_at),
        _when(key.revoked_at),
        "-" if budget is None else f"{budget:.6f}",
        f"{usd(key.spent_pusd) or 0:.6f}",
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
    from gateway.store.keys import list_keys

    found = _run(database_url, list_keys)
    if output == "json":
        data: dict[str, Any] = {"object": "list", "data": [key_object(k) for k in found]}
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(_table([_row(k) for k in found]))


@keys.command()
@click.argument("name")
@DATABASE_OPTION
def revoke(name: str, database_url: str | None) -> None:
    """Revoke a key: its caller is refused (401) within GATEWAY_KEY_CACHE_SECONDS."""
    from gateway.store.keys import revoke_key

    found = _run(database_url, lambda s: revoke_key(s, name, time.time()))
    if found is None:
        raise click.ClickException(f"No key named '{name}'.")
    click.echo(f"Revoked key '{name}'.")

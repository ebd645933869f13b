"""`gateway usage`: the operator's usage report over every caller, from the gateway's database."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import click

from gateway.errors import DatabaseUnavailable, GatewayError
from gateway.reports import FORMATS, GROUP_BY, Group, Report, UsageQuery, parse_report_params, render


async def _groups(database_url: str, query: UsageQuery, *, transaction_pooling: bool) -> list[Group]:
    from gateway.store.database import Database, create_engine
    from gateway.store.usage import usage_groups

    engine = create_engine(database_url, pool_size=1, transaction_pooling=transaction_pooling)
    try:
        async with Database(engine, lease_seconds=60).transaction() as session:
            return await usage_groups(session, query)
    finally:
        await engine.dispose()


def _check_sqlite_file(database_url: str) -> None:
    """Refuse a missing SQLite file (opening it would create an empty database)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    named_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if named_file and not Path(str(url.database)).is_file():
        raise click.ClickException(f"no gateway database at {url.database} (set GATEWAY_DATABASE_URL)")


def check_prices_file(path: str | None) -> None:
    """Refuse to start on an unusable GATEWAY_PRICES_FILE, with the reason instead of a traceback."""
    from gateway.config import ConfigError
    from gateway.pricing import load_prices_file

    if path is None:
        return
    try:
        load_prices_file(path)
    except ConfigError as exc:
        raise click.UsageError(f"GATEWAY_PRICES_FILE: {exc}") from None


@click.command("usage")
@click.option("--conversation", "conversation_id", default=None, help="Only this conversation id.")
@click.option(
    "--group-by",
    type=click.Choice(GROUP_BY),
    default=None,
    help="One row per conversation, model or UTC day.",
)
@click.option("--since", default=None, help="ISO 8601 date or time, inclusive (no zone: UTC).")
@click.option(
    "--until", default=None, help="ISO 8601 date or time, exclusive; a date includes its whole day."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--database-url", default=None, help="SQLAlchemy URL (GATEWAY_DATABASE_URL).")
def usage(
    conversation_id: str | None,
    group_by: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
    database_url: str | None,
) -> None:
    """Report usage and cost of every caller (the same figures as GET /v1/usage)."""
    from gateway.cli import load_settings

    settings = load_settings(database_url=database_url)
    options = {"group_by": group_by, "since": since, "until": until}
    try:
        params = {name: value for name, value in options.items() if value is not None}
        query, _ = parse_report_params(params, owner=None)
    except GatewayError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.param}") from None
    query = dataclasses.replace(query, conversation_id=conversation_id)
    _check_sqlite_file(settings.database_url)
    try:
        groups = asyncio.run(
            _groups(settings.database_url, query, transaction_pooling=settings.db_transaction_pooling)
        )
    except DatabaseUnavailable as exc:
        cause = getattr(exc.__cause__, "orig", None) or exc.__cause__ or exc
        raise click.ClickException(
            f"cannot read the request log: {cause}\n(is the database migrated? run `gateway migrate`)"
        ) from None
    click.echo(render(Report(groups, group_by=group_by, conversation_id=conversation_id), fmt), nl=False)

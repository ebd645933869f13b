"""`gateway usage`: the operator's usage report over every caller, from the gateway's database."""

from __future__ import annotations

import dataclasses
import functools

import click

from gateway.cli.database import require_sqlite_file, run_on_database
from gateway.cli.settings import DATABASE_OPTION, load_settings
from gateway.errors import DatabaseUnavailable, InvalidRequest
from gateway.reports import FORMATS, GROUP_BY, Group, Report, parse_report_params, render
from gateway.store.database import Database
from gateway.store.usage import usage_groups


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
@DATABASE_OPTION
def usage(
    conversation_id: str | None,
    group_by: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
    database_url: str | None,
) -> None:
    """Report usage and cost of every caller (the same figures as GET /v1/usage)."""
    settings = load_settings(database_url=database_url)
    options = {"group_by": group_by, "since": since, "until": until}
    try:
        params = {name: value for name, value in options.items() if value is not None}
        query, _ = parse_report_params(params, owner=None)
    except InvalidRequest as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.param}") from None
    query = dataclasses.replace(query, conversation_id=conversation_id)
    require_sqlite_file(settings.database_url)

    async def work(db: Database) -> list[Group]:
        return await db.run(functools.partial(usage_groups, query=query))

    try:
        groups = run_on_database(settings, work)
    except DatabaseUnavailable as exc:
        cause = getattr(exc.__cause__, "orig", None) or exc.__cause__ or exc
        raise click.ClickException(
            f"cannot read the request log: {cause}\n(is the database migrated? run `gateway migrate`)"
        ) from None
    click.echo(render(Report(groups, group_by=group_by, conversation_id=conversation_id), fmt), nl=False)

"""`gateway conversations list|show|delete`: the operator's view of stored conversations, across callers.

The commands read the same database as the server (GATEWAY_DATABASE_URL or --database-url) through the
same store queries as the API. A caller (owner) is the SHA-256 of their bearer token; `--owner` takes it
or any prefix of it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from sqlalchemy import Connection

from gateway.cli.database import run_on_database
from gateway.cli.settings import DATABASE_OPTION, load_settings
from gateway.errors import GatewayError
from gateway.store.conversations import (
    delete_conversation,
    find_conversations,
    get_conversation,
    list_conversations,
    list_messages,
)
from gateway.store.database import Database, db_errors
from gateway.store.tables import Conversation
from gateway.views import conversation_object, render_json

T = TypeVar("T")

OWNER_OPTION = click.option(
    "--owner", default=None, help="Only this caller: its identity (SHA-256) or a prefix."
)


def _run(database_url: str | None, work: Callable[[Database], Awaitable[T]]) -> T:
    """Open the database, run `work(db)`, close it; database errors become a clean CLI error."""
    settings = load_settings(database_url=database_url)
    failures: tuple[type[BaseException], ...] = (GatewayError, *db_errors(settings.database_url))
    try:
        return run_on_database(settings, work)
    except failures as exc:  # broad: an outage and a lock held by a turn alike
        raise click.ClickException(
            f"{exc} (is {settings.database_url} a migrated gateway database?)"
        ) from exc


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _view(conversation: Conversation) -> dict[str, Any]:
    """The API's conversation object, plus the owner (the operator sees every caller's)."""
    return {**conversation_object(conversation), "owner": conversation.owner}


@click.group("conversations")
def conversations() -> None:
    """List, show and delete stored conversations (all callers)."""


@conversations.command("list")
@OWNER_OPTION
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@DATABASE_OPTION
def list_command(owner: str | None, limit: int, as_json: bool, database_url: str | None) -> None:
    """Conversations, newest activity first."""

    async def work(db: Database) -> list[Conversation]:
        return await db.run(
            functools.partial(list_conversations, owner=None, limit=limit + 1, owner_prefix=owner)
        )

    rows = _run(database_url, work)
    if as_json:
        for conversation in rows[:limit]:
            click.echo(render_json(_view(conversation), separators=(", ", ": ")))
        return
    click.echo(
        f"{'ID':<40} {'OWNER':<14} {'MESSAGES':>8} {'TOKENS':>9}  {'UPDATED (UTC)':<19}  SYSTEM PROMPT"
    )
    for conversation in rows[:limit]:
        system = (_view(conversation)["system_prompt"] or "").replace("\n", " ")
        click.echo(
            f"{conversation.id:<40} {conversation.owner[:12]:<14} {conversation.message_count:>8} "
            f"{conversation.token_count:>9}  {_when(conversation.updated_at):<19}  {system[:40]}"
        )
    if len(rows) > limit:
        click.echo(f"(more than {limit}: use --limit or --owner)")


@conversations.command("show")
@click.argument("conversation_id")
@OWNER_OPTION
@click.option(
    "--messages/--no-messages", default=True, show_default=True, help="Include the stored messages."
)
@DATABASE_OPTION
def show_command(conversation_id: str, owner: str | None, messages: bool, database_url: str | None) -> None:
    """Every conversation with this id (one per caller that used it), as JSON."""

    def unit(connection: Connection) -> list[dict[str, Any]]:
        found = []
        for conversation in find_conversations(connection, conversation_id, owner):
            view = _view(conversation)
            if messages:
                rows = list_messages(connection, conversation)
                view["messages"] = [{**body, "created_at": int(created)} for _, body, created in rows]
            found.append(view)
        return found

    async def work(db: Database) -> list[dict[str, Any]]:
        return await db.run(unit)

    found = _run(database_url, work)
    if not found:
        raise click.ClickException(f"No conversation with id '{conversation_id}'.")
    for view in found:
        click.echo(render_json(view, indent=2, separators=(",", ": ")))


@conversations.command("delete")
@click.argument("conversation_id")
@OWNER_OPTION
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (only asked on a terminal).")
@DATABASE_OPTION
def delete_command(conversation_id: str, owner: str | None, yes: bool, database_url: str | None) -> None:
    """Delete a conversation (messages and settings; the request log keeps its usage, loses its content)."""

    async def matches(db: Database) -> list[Conversation]:
        return await db.run(
            functools.partial(find_conversations, conversation_id=conversation_id, owner_prefix=owner)
        )

    found = _run(database_url, matches)
    if not found:
        raise click.ClickException(f"No conversation with id '{conversation_id}'.")
    if len(found) > 1:
        owners = ", ".join(c.owner for c in found)
        raise click.ClickException(
            f"{len(found)} callers have a conversation '{conversation_id}' (owners {owners}): "
            "choose one with --owner."
        )
    target = found[0]
    if not yes and sys.stdin.isatty():  # scripts (no terminal) are not asked
        click.confirm(
            f"Delete conversation '{conversation_id}' of owner {target.owner[:12]} "
            f"({target.message_count} messages)?",
            abort=True,
        )
    settings = load_settings(database_url=database_url)

    def unit(connection: Connection) -> bool:
        conversation = get_conversation(connection, target.owner, conversation_id)
        if conversation is None:
            return False
        delete_conversation(connection, conversation)
        return True

    async def delete(db: Database) -> bool:
        # The lock makes a delete wait for a turn in flight (in one process; across processes on Postgres).
        async with db.locks.hold(target.owner, conversation_id, settings.lock_timeout):
            return await db.run(unit)

    if not _run(database_url, delete):
        raise click.ClickException(f"Conversation '{conversation_id}' was deleted meanwhile.")
    click.echo(f"deleted conversation '{conversation_id}' of owner {target.owner}")

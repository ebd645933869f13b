"""The `gateway` command: one module per command group, one settings loader, one database opener.

- serve.py: `serve`, `migrate`, `mock-upstream`
- usage.py: `usage`;  conversations.py: `conversations list|show|delete`;  keys.py: `keys create|list|revoke`
- settings.py: the settings from the environment and the flags;  database.py: opening the database

A command's module is imported when that command runs, so that `gateway serve` starts without the
operator commands' database code (see _Commands).
"""

from __future__ import annotations

import importlib

import click

__all__ = ["main"]

COMMANDS = {
    "serve": "gateway.cli.serve:serve",
    "migrate": "gateway.cli.serve:migrate",
    "mock-upstream": "gateway.cli.serve:mock_upstream",
    "usage": "gateway.cli.usage:usage",
    "conversations": "gateway.cli.conversations:conversations",
    "keys": "gateway.cli.keys:keys",
}


class _Commands(click.Group):
    """A click group whose commands live in the modules COMMANDS names, loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, sorted as click lists them."""
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command object, importing its module now."""
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, name = target.split(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_Commands)
def main() -> None:
    """gateway: an OpenAI-compatible stateful proxy."""

"""The `gateway` command: one module per command group, one settings loader, one database opener.

- serve.py: `serve`, `migrate`, `mock-upstream`
- usage.py: `usage`;  conversations.py: `conversations list|show|delete`;  keys.py: `keys create|list|revoke`
- settings.py: the settings from the environment and the flags;  database.py: opening the database
"""

from __future__ import annotations

import click

from gateway.cli.conversations import conversations
from gateway.cli.keys import keys
from gateway.cli.serve import migrate, mock_upstream, serve
from gateway.cli.usage import usage

__all__ = ["main"]


@click.group()
def main() -> None:
    """gateway: an OpenAI-compatible stateful proxy."""


for command in (serve, migrate, mock_upstream, usage, conversations, keys):
    main.add_command(command)

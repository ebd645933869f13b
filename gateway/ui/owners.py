"""How the admin's pages name a caller: its key's name where it has one, else the start of its identity."""

from __future__ import annotations

from sqlalchemy import Connection

from gateway.store.keys import list_keys
from gateway.ui.views import short_identity


class OwnerNames:
    """Labels for caller identities (only the admin's pages show owners at all)."""

    def __init__(self, names: dict[str, str], admin_identity: str | None) -> None:
        self.names = names
        self.admin_identity = admin_identity

    @classmethod
    def load(cls, connection: Connection, admin_identity: str | None) -> OwnerNames:
        """A unit-of-work step: every key's name by identity."""
        return cls({key.identity: key.name for key in list_keys(connection)}, admin_identity)

    def label(self, identity: str) -> str:
        """`name (3f2a9c4b1d0e)`, or the identity's first 12 hex digits."""
        if identity == self.admin_identity:
            return f"admin key ({short_identity(identity)})"
        name = self.names.get(identity)
        return f"{name} ({short_identity(identity)})" if name else short_identity(identity)

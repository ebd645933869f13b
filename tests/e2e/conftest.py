"""Fixtures shared by the end-to-end modules (the common ones live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.scripted_upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    """A raw-socket scripted upstream that records what it receives, one per module."""
    server = ScriptedUpstream().start()
    yield server
    server.stop()

"""Fixtures shared by the end-to-end modules (the common ones live in tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.scripted_upstream import ScriptedUpstream
from tests.servers import AppServer, ServerProcess, gateway_app


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    """A raw-socket scripted upstream that records what it receives, one per module."""
    server = ScriptedUpstream().start()
    yield server
    server.stop()


NODE_OPENAI = Path(__file__).parent / "node_openai"
"""The official `openai` npm package, at the version its package-lock.json pins (`npm ci --prefix` it)."""


@pytest.fixture(scope="session")
def node_openai(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where a test writes its Node script: it imports the locked `openai` package of NODE_OPENAI."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Node SDK checks need it")
    installed = NODE_OPENAI / "node_modules"
    if not (installed / "openai" / "package.json").exists():
        pytest.skip(f"the Node SDK is not installed: run `npm ci --prefix {NODE_OPENAI}`")
    folder = tmp_path_factory.mktemp("node-openai")
    (folder / "package.json").write_text('{"private": true, "type": "module"}')
    (folder / "node_modules").symlink_to(installed, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def sliding(upstream: ServerProcess, database_url: str) -> Iterator[AppServer]:
    """A gateway whose server default is the `sliding` strategy (the trimming of the history budget rules;
    `stable` is the default), for the tests that pin it."""
    server = gateway_app(upstream.url, database_url, history_strategy="sliding").start()
    try:
        yield server
    finally:
        server.stop()

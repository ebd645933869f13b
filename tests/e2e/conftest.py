"""Fixtures shared by the end-to-end modules (the common ones live in tests/conftest.py)."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
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


@pytest.fixture(scope="session")
def node_openai(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the official `openai` npm package installed (cached between runs when possible)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the Node SDK check")
    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir("node-openai")) if cache is not None else tmp_path_factory.mktemp("node-openai")
    # The cache folder is shared by the xdist workers: one installs while the others wait for it, so that none
    # runs its script against a half-written node_modules.
    with (folder.parent / "node-openai.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "node_modules" / "openai" / "package.json").exists():
            (folder / "package.json").write_text(
                '{"name": "gateway-node-check", "private": true, "type": "module"}'
            )
            try:
                result = subprocess.run(
                    ["npm", "install", "--no-audit", "--no-fund", "--silent", "--fetch-retries=1", "openai"],
                    cwd=folder,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            except subprocess.TimeoutExpired:
                pytest.skip("npm install openai took over 120 s (no registry access?)")
            if result.returncode != 0:
                pytest.skip(f"npm install openai failed: {result.stderr[-500:]}")
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

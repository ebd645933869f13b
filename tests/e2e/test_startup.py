"""`gateway serve` says "listening" only once its port accepts connections."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.servers import base_env, free_port


def test_listening_is_logged_only_once_the_port_accepts(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    args = ["serve", "--port", str(port), "--upstream", "http://127.0.0.1:9"]
    args += ["--database-url", f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"]
    with log.open("wb") as out:
        command = [sys.executable, "-m", "gateway", *args]
        process = subprocess.Popen(command, env=base_env(), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.01)
        assert "listening on" in log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # no retry: the port accepts the moment the line is written
    finally:
        process.terminate()
        process.wait(30)

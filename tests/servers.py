"""Start the real gateway and the mock upstream as processes on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Poll `url` until it answers, failing early (with the log) if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not come up at {url}:\n{log.read_text()[-4000:]}")


@dataclass
class ServerProcess:
    """A server started with `python -m gateway ...`, stopped by PID."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    health_path: str
    process: subprocess.Popen[bytes] | None = None
    _log_file: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        """Start the process and wait until it answers."""
        log = self.log_path.open("ab")
        self._log_file = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until_up(self.url + self.health_path, self.process, self.log_path)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send `sig` and wait for the exit (SIGKILL if it lingers); returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        return code

    def restart(self) -> ServerProcess:
        """Stop gracefully and start again with the same settings."""
        self.stop()
        return self.start()

    def log(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace")


def base_env() -> dict[str, str]:
    """The environment for child servers: ours, without GATEWAY_* settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def mock_upstream(tmp: Path) -> ServerProcess:
    """The built-in fake OpenAI upstream, as `gateway mock-upstream`."""
    port = free_port()
    return ServerProcess(
        args=["mock-upstream", "--port", str(port)],
        env=base_env(),
        log_path=tmp / f"mock-{port}.log",
        port=port,
        health_path="/mock/requests",
    )


def gateway_server(tmp: Path, upstream_url: str, database_url: str, **env: str) -> ServerProcess:
    """The real gateway, as `gateway serve`, with extra GATEWAY_* settings from `env`."""
    port = free_port()
    child_env = base_env() | {f"GATEWAY_{k.upper()}": v for k, v in env.items()}
    return ServerProcess(
        args=["serve", "--port", str(port), "--upstream", upstream_url, "--database-url", database_url],
        env=child_env,
        log_path=tmp / f"gateway-{port}.log",
        port=port,
        health_path="/healthz",
    )


def upstream_requests(upstream: ServerProcess, token: str | None = None) -> list[dict[str, Any]]:
    """What the mock upstream received (from the caller with `token`, when given), oldest first."""
    data: list[dict[str, Any]] = httpx.get(upstream.url + "/mock/requests").json()["data"]
    if token is None:
        return data
    return [r for r in data if r["headers"].get("authorization") == f"Bearer {token}"]

"""Start the real gateway and the mock upstream as processes on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.config import Settings


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
    if os.environ.get("GATEWAY_TEST_CA_FILE"):  # the test clients' one-CA file (tests/conftest.py)
        env.pop("SSL_CERT_FILE", None)
        if original := os.environ.get("GATEWAY_TEST_ORIGINAL_SSL_CERT_FILE"):
            env["SSL_CERT_FILE"] = original
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


class AppServer:
    """The gateway app served by uvicorn on a real socket in a thread of the test process.

    It answers like `gateway serve` (same app, same settings from GATEWAY_* variables) without a process
    start; tests where the process is the point (signals, restarts, logs, workers) use ServerProcess.
    """

    process = None  # no process to signal: the ServerProcess-only tests ask for one

    def __init__(self, env: dict[str, str]) -> None:
        self.settings = Settings.from_env(env)
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppServer:
        """Bind a free port, serve the app from a thread, and wait until its lifespan has started."""
        from gateway.app import create_app
        from gateway.server import PROTOCOL, set_deadlines

        set_deadlines(self.settings.header_timeout, self.settings.body_timeout)  # as `serve` does
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(self.settings),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=self.settings.shutdown_grace,
            http=PROTOCOL,  # the options `gateway serve` gives uvicorn
            timeout_keep_alive=self.settings.keep_alive_timeout,
            limit_concurrency=self.settings.max_connections,
        )
        server = self._server = uvicorn.Server(config)
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # reported by start() below
                failure.append(exc)
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"gateway-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if failure or not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"in-process gateway did not start: {failure!r}")
            time.sleep(0.01)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Shut the server down gracefully (uvicorn's SIGTERM path) and wait for its thread."""
        if self._server is None or self._thread is None:
            return None
        self._server.should_exit = True
        self._thread.join(timeout)
        self._server = self._thread = None
        return 0

    def restart(self) -> AppServer:
        """Stop and start again with the same settings (on a new port)."""
        self.stop()
        return self.start()


def gateway_app(upstream_url: str, database_url: str, **env: str) -> AppServer:
    """The gateway app in this process (see AppServer), with extra GATEWAY_* settings from `env`."""
    settings_env = {f"GATEWAY_{k.upper()}": v for k, v in env.items()}
    settings_env |= {"GATEWAY_UPSTREAM_URL": upstream_url, "GATEWAY_DATABASE_URL": database_url}
    return AppServer(settings_env)


def upstream_requests(upstream: ServerProcess, token: str | None = None) -> list[dict[str, Any]]:
    """What the mock upstream received (from the caller with `token`, when given), oldest first."""
    data: list[dict[str, Any]] = httpx.get(upstream.url + "/mock/requests").json()["data"]
    if token is None:
        return data
    return [r for r in data if r["headers"].get("authorization") == f"Bearer {token}"]

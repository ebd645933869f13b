"""A private PgBouncer in transaction pooling mode in front of the Postgres test server, for end-to-end tests.

Started on a free port with a temporary config, stopped by PID. Tests skip (with the reason) where the
`pgbouncer` binary is missing: `apt-get install -y pgbouncer` (Debian), which .ci/run does where it can.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.servers import free_port

SEARCH = ("/usr/sbin", "/usr/local/sbin", "/usr/bin")


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable (Debian installs it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path=os.pathsep.join(SEARCH))


@dataclass
class PgBouncer:
    """pgbouncer (pool_mode = transaction) on 127.0.0.1:<port>, forwarding every database to one server."""

    root: Path
    port: int
    server_url: str
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, binary: str, server_url: str, *, pool_size: int = 10) -> PgBouncer:
        """Write a config for the server of `server_url` (an asyncpg URL, trust auth) and start it."""
        server = make_url(server_url)
        root = Path(tempfile.mkdtemp(prefix="gw-pgbouncer-"))
        bouncer = cls(root, free_port(), server_url)
        user = server.username or "postgres"
        (root / "userlist.txt").write_text(f'"{user}" ""\n')
        (root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {bouncer.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {root / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\nmax_client_conn = 500\n"
            "server_reset_query =\nignore_startup_parameters = extra_float_digits\n"
            f"logfile = {root / 'pgbouncer.log'}\n"
        )
        command = [binary, str(root / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            shutil.chown(root, "postgres")
            for path in root.iterdir():
                shutil.chown(path, "postgres")
            command = [binary, "-u", "postgres", str(root / "pgbouncer.ini")]
        bouncer.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bouncer._wait_until_listening()
        return bouncer

    def url(self, database: str) -> str:
        """The asyncpg URL of `database` through PgBouncer."""
        base = make_url(self.server_url).set(host="127.0.0.1", port=self.port, database=database)
        return base.render_as_string(hide_password=False)

    def _wait_until_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}:\n{self.log()}")

    def log(self) -> str:
        """What pgbouncer logged."""
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop it (SIGINT: immediate shutdown) and delete its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)

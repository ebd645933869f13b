"""A private, throwaway PostgreSQL server (initdb in a temp dir, its own port) that a test may stop and start.

Tests that restart Postgres use this, never the shared server others' test runs use at the same time.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port


def postgres_bindir() -> Path | None:
    """The directory of initdb/pg_ctl: from pg_config, else the newest /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout
        if (Path(found.strip()) / "initdb").is_file():
            return Path(found.strip())
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class PrivateCluster:
    """A postgres server in a temp dir on 127.0.0.1:<port>, trust auth (run as `postgres` when root)."""

    bindir: Path
    root: Path
    port: int

    @classmethod
    def create(cls, bindir: Path) -> PrivateCluster:
        """initdb a new cluster (not started)."""
        root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        cluster = cls(bindir, root, free_port())
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        cluster._run(
            "initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"
        )
        settings = (
            f"port = {cluster.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
            "fsync = off\nmax_connections = 100\n"
        )
        with (root / "data" / "postgresql.auto.conf").open("a") as conf:
            conf.write(settings)
        return cluster

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its `postgres` database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop it the way an outage would: fast shutdown, every session terminated."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        """Stop (if running) and delete everything."""
        subprocess.run(
            self._command("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop"),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bindir / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def _run(self, tool: str, *args: str) -> None:
        # stdout/stderr to DEVNULL, not pipes: the server inherits them and would keep a pipe open forever
        subprocess.run(
            self._command(tool, *args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )

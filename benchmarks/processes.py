"""Start the servers a benchmark needs, pinned to CPUs, and stop them again by PID."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the proxy and the load side (mock upstream + load generator) run on; None = unpinned."""

    proxy: str | None
    load: str | None

    @classmethod
    def detect(cls) -> Pinning:
        """Proxy on CPU 0, mock and load generator on CPU 1, when taskset and two CPUs are there."""
        if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
            return cls(None, None)
        cpus = sorted(os.sched_getaffinity(0))
        return cls(str(cpus[0]), str(cpus[1]))

    def wrap(self, cpus: str | None, argv: Sequence[str]) -> list[str]:
        """`argv` run under `taskset -c cpus` (or as it is when unpinned)."""
        return ["taskset", "-c", cpus, *argv] if cpus is not None else list(argv)

    def describe(self) -> str:
        """One line for the report."""
        if self.proxy is None:
            return "unpinned (taskset or a second CPU is missing)"
        return f"proxy on CPU {self.proxy}; mock upstream and load generator on CPU {self.load}"


@dataclass
class Server:
    """One server process this benchmark started (and alone stops)."""

    name: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    health_path: str = "/healthz"
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8000."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path, timeout: float = 60.0) -> Server:
        """Start the process (in its own process group) and wait until it answers."""
        self.log_path = log_dir / f"{self.name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        self._wait_until_up(timeout)
        return self

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.health_path, timeout=1.0):
                    return
            except urllib.error.HTTPError:
                return  # it answered (the mock has no /healthz)
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not come up on {self.url}:\n{self.log_tail()}")

    def settle(self, timeout: float = 15.0, window: float = 0.25) -> float:
        """Wait until the server's processes are idle for one `window` (at most `timeout` s); seconds waited.

        The gateway answers as soon as its port is bound and finishes starting in the background (it
        imports its HTTP client, builds the tokenizer, reads the price snapshot); with `--workers 2` on one
        CPU that took ~3 s on a slow machine and spilled into the first measurement (p99 at concurrency 1
        of 0.3-1.3 s). Idle: under 5% of a CPU over the window (/proc counts in ticks of 10 ms).
        """
        started = time.monotonic()
        before = self.cpu_seconds()
        while time.monotonic() - started < timeout:
            time.sleep(window)
            now = self.cpu_seconds()
            if now - before <= 0.05 * window:
                break
            before = now
        return time.monotonic() - started

    def log_tail(self) -> str:
        """The end of the server's output, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]

    def pids(self) -> list[int]:
        """The server's PID and its workers' (children in its process group)."""
        if self.process is None:
            return []
        pids = [self.process.pid]
        with contextlib.suppress(OSError):
            for entry in os.listdir("/proc"):
                if entry.isdigit() and _parent_pid(int(entry)) == self.process.pid:
                    pids.append(int(entry))
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the server and its worker processes."""
        return sum(_cpu_seconds(pid) for pid in self.pids())

    def rss_bytes(self) -> int:
        """Resident memory of the server and its worker processes, summed (VmRSS from /proc)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def stop(self) -> None:
        """SIGTERM (uvicorn stops its workers), SIGKILL after a grace period; then any worker left, by PID."""
        if self.process is None or self.process.poll() is not None:
            return
        workers = self.pids()[1:]
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for pid in workers:
            if _process_group(pid) == self.process.pid:  # still the worker we started, not a reused PID
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _process_group(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    """Stop every server in `servers` on the way out, whatever happened."""
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop()


def python_argv(*args: str) -> list[str]:
    """Run with this interpreter (the venv that has the gateway installed)."""
    return [sys.executable, *args]


def busy_cpu_seconds() -> float:
    """CPU seconds processes on the machine have run since boot (user, nice, system; from /proc/stat).

    Interrupt time is left out: most of it is the loopback traffic of the benchmark itself, which the
    kernel charges to no process.
    """
    user, nice, system = (int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this script's finished children (the load generator runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_fraction(seconds: float = 1.0) -> float:
    """How busy the machine's CPUs were over `seconds`, as a fraction of all of them."""
    before = busy_cpu_seconds()
    time.sleep(seconds)
    return (busy_cpu_seconds() - before) / (seconds * (os.cpu_count() or 1))


def wait_until_quiet(limit: float, threshold: float = 0.10) -> float:
    """Wait (at most `limit` seconds) until other work leaves the machine nearly idle; returns how busy."""
    deadline = time.monotonic() + limit
    busy = machine_busy_fraction(2.0)
    while busy > threshold and time.monotonic() < deadline:
        busy = machine_busy_fraction(2.0)
    return busy


def database_backends(database: str) -> list[int]:
    """PIDs of the local Postgres server's backends connected to `database` (from their process titles)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        # "postgres: 15/main: <user> <database> <host>(<port>) <state>" (the cluster name is optional)
        words = title.split()[1:] if title.startswith("postgres: ") else []
        if words and words[0].endswith(":"):
            words = words[1:]
        if len(words) > 2 and words[1] == database:
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def backends_pinned(database: str, cpus: str | None, every: float = 0.2) -> Iterator[set[int]]:
    """While inside, keep the local Postgres backends of `database` on `cpus` (the load side's CPU).

    The database stands for a server of its own, as the mock upstream does: pinned away from the proxy's
    CPU. Unpinned, the kernel wakes a backend on the CPU of the process that wrote to it, the proxy's,
    where it takes CPU from the proxy that no bare pass-through has to share. Backends end with their
    connections, so nothing stays pinned afterwards; the set yielded fills with the PIDs pinned. Nothing
    happens without a pinning, or where the backends cannot be pinned (another user's server).
    """
    pinned: set[int] = set()
    stop = threading.Event()

    def keep_pinned() -> None:
        assert cpus is not None
        target = {int(cpu) for cpu in cpus.split(",")}
        while not stop.wait(every):
            for pid in database_backends(database):
                with contextlib.suppress(OSError):  # it ended meanwhile, or is not ours to pin
                    if os.sched_getaffinity(pid) != target:
                        os.sched_setaffinity(pid, target)
                        pinned.add(pid)

    thread = threading.Thread(target=keep_pinned, name="pin-backends", daemon=True)
    if cpus is not None:
        thread.start()
    try:
        yield pinned
    finally:
        stop.set()
        if cpus is not None:
            thread.join()

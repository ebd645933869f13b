"""Start-up time and resident memory: `gateway serve` beside the bare pass-through.

    .venv/bin/python benchmarks/startup.py              # 5 starts each, then 20 s of load at concurrency 32
    .venv/bin/python benchmarks/startup.py --starts 3 --seconds 10

Ready = from spawning the process to the first 200 from /healthz (the gateway) or any answer (the bare
pass-through), polled every 10 ms. Measured on a new SQLite file (migrations applied, in a child process) and
on one already migrated. The CPU seconds the process (and its finished children) used until ready are
reported too: on a shared machine they move far less than the wall-clock time. Resident memory (VmRSS) is
read right after ready, 3 s later (the gpt-4o tokenizer is built in the background after ready), at its
peak (sampled every 100 ms) under the benchmark's load (new conversation per request, concurrency 32) and
at the end of that load, with the process's CPU time per request under that load. It stops every process it
started.

The gateway package is byte-compiled first, as `pip install .` (the README's quick start, the Docker image)
leaves it: from a checkout where bytecode is never written back (PYTHONDONTWRITEBYTECODE, as on the CI
machine) every start would also compile the package (~0.2 s), which no installed gateway does.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from load import Scenario, run_load, wrk_available
from processes import Pinning, Server, free_port, python_argv

HERE = Path(__file__).resolve().parent


def rss_mb(pid: int) -> float:
    """Resident memory of one process, in MiB (VmRSS; the tables' "MB" are MiB, as in run.py)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU seconds of one process and of its children that it has waited for (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def answers(url: str) -> bool:
    """True once `url` answers at all (an HTTP error status counts as an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_timed(server: Server, log_dir: Path, timeout: float = 60.0) -> tuple[float, float]:
    """Start `server`, poll its health path every 10 ms; return the seconds until it answered and its CPU."""
    server.log_path = log_dir / f"{server.name}.log"
    started = time.perf_counter()
    with server.log_path.open("wb") as log:
        server.process = subprocess.Popen(
            server.argv,
            env={**os.environ, **server.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=HERE.parent,
            start_new_session=True,
        )
    while time.perf_counter() - started < timeout:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
        if answers(server.url + server.health_path):
            return time.perf_counter() - started, cpu_seconds(server.process.pid)
        time.sleep(0.01)
    raise RuntimeError(f"{server.name} did not come up:\n{server.log_tail()}")


class PeakRss:
    """Samples a process's VmRSS every 100 ms in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.1)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def gateway(name: str, database: Path, upstream: str) -> Server:
    """`gateway serve` on an SQLite file."""
    port = free_port()
    argv = python_argv("-m", "gateway", "serve", "--port", str(port), "--upstream", upstream)
    argv += ["--database-url", f"sqlite+aiosqlite:///{database}"]
    # One token makes every load conversation: past the default per-caller bound within seconds, and a 429
    # costs far less than a turn, so the memory peak would be measured on rejections.
    env = {"GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_MAX_CONVERSATIONS_PER_CALLER": "0"}
    return Server(name, argv, port, env=env)


def bare(upstream: str) -> Server:
    """The bare Starlette + httpx pass-through (benchmarks/bare_proxy.py)."""
    port = free_port()
    argv = [sys.executable, str(HERE / "bare_proxy.py"), "--port", str(port), "--upstream", upstream + "/v1"]
    return Server("bare", argv, port, health_path="/")


def main() -> None:
    """Measure, print a Markdown table, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="starts per case (median reported)")
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration for the memory peak")
    args = parser.parse_args()
    compileall.compile_dir(HERE.parent / "gateway", quiet=1)  # as installed (see the module's docstring)
    pinning = Pinning.detect()
    rows: list[tuple[str, str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="gw-startup-") as tmp:
        log_dir = Path(tmp)
        mock_port = free_port()
        mock_argv = python_argv("-m", "gateway", "mock-upstream", "--port", str(mock_port))
        mock = Server("mock", mock_argv, mock_port, health_path="/mock/requests")
        mock.start(log_dir)
        upstream = mock.url
        try:
            fresh: list[tuple[float, float]] = []
            existing: list[tuple[float, float]] = []
            for i in range(args.starts):
                database = log_dir / f"start-{i}.db"
                for times in (fresh, existing):  # first start migrates a new file, the second reopens it
                    server = gateway(f"gateway-{i}", database, upstream)
                    try:
                        times.append(start_timed(server, log_dir))
                    finally:
                        server.stop()
            bare_times: list[tuple[float, float]] = []
            for _ in range(args.starts):
                server = bare(upstream)
                try:
                    bare_times.append(start_timed(server, log_dir))
                finally:
                    server.stop()

            for server in (gateway("gateway-load", log_dir / "load.db", upstream), bare(upstream)):
                ready, _ = start_timed(server, log_dir)
                assert server.process is not None
                pid = server.process.pid
                at_ready = rss_mb(pid)
                time.sleep(3)  # the tokenizer warm-up runs in the background after ready
                settled = rss_mb(pid)
                scenario = Scenario(mode="new", tag=f"mem{pid}")
                pin = pinning.wrap(pinning.load, [])
                cpu_before = cpu_seconds(pid)
                with PeakRss(pid) as peak:
                    result = run_load(
                        server.url,
                        scenario,
                        connections=32,
                        seconds=args.seconds,
                        pin=pin,
                        use_wrk=wrk_available(),
                    )
                at_end = rss_mb(pid)
                cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / max(result.requests, 1)
                server.stop()
                name = "gateway (SQLite)" if server.name.startswith("gateway") else "bare pass-through"
                rows.append(
                    (
                        name,
                        f"{ready:.2f}",
                        f"{at_ready:.0f}",
                        f"{settled:.0f}",
                        f"{peak.peak:.0f} ({result.rps:,.0f} req/s, {result.errors} errors)",
                        f"{at_end:.0f}",
                        f"{cpu_ms:.2f}",
                    )
                )
        finally:
            mock.stop()

    load = f"load: {args.seconds:.0f} s at concurrency 32"
    print(f"\nstarts: {args.starts} each, medians; {load}; {pinning.describe()}\n")
    print("| start-up | ready, median s | min | max | CPU s until ready, median |")
    print("|---|---:|---:|---:|---:|")
    for label, starts in (
        ("gateway, new SQLite file (migrations applied)", fresh),
        ("gateway, existing SQLite file", existing),
        ("bare pass-through", bare_times),
    ):
        values = [ready for ready, _ in starts]
        median, cpu = statistics.median(values), statistics.median(used for _, used in starts)
        print(f"| {label} | {median:.2f} | {min(values):.2f} | {max(values):.2f} | {cpu:.2f} |")
    columns = "RSS at ready MB | RSS 3 s later MB | peak under load MB | after load MB | CPU ms per request"
    print(f"\n| process | ready s | {columns} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

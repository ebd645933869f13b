"""Instructions per request: `gateway serve` under valgrind's callgrind, a fixed number of requests.

CPU time on a shared machine moves by 5-20% between runs, which hides a change of a few percent; the
instructions a request costs in user space repeat within 0.1%. This runs the mock upstream, seeds the
"existing conversation" pool of run.py (64 conversations of 20 messages), starts `gateway serve` under
`valgrind --tool=callgrind` with instrumentation off, sends a warm-up, switches instrumentation on, zeroes the
counters, sends `--requests` requests from `--connections` connections (the Python load generator), dumps, and
prints the instructions per request of each thread (the event loop and, on SQLite, the lane):

    apt-get install -y valgrind
    .venv/bin/python benchmarks/instructions.py --case existing          # ~1 minute
    .venv/bin/python benchmarks/instructions.py --case new --postgres-url postgresql+asyncpg://...
    .venv/bin/python benchmarks/instructions.py --case bare --connections 32

`--case bare` counts the bare pass-through (bare_proxy.py, the plain request) instead of the gateway: the
side-by-side comparison of run.py without the noise of a shared machine, where the CPU a request costs
drifts by a third within seconds. Instructions are not seconds (system calls and cache misses are left
out), so it complements run.py's req/s rather than replacing them.

Compare two commits by running it in a worktree of each. Kernel time (system calls) is not counted: see
`strace -c` for those. Every process it starts is stopped by PID; a Postgres database it makes is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from load import TOKEN, HttpConnection, Scenario
from processes import Server, free_port, python_argv, running
from seed import seed_conversations

CASES = {
    "existing": Scenario(mode="pool", prefix="hist", pool=64, max_history=20),
    "new": Scenario(mode="new", tag="instr"),
    "plain": Scenario(mode="plain"),
    "bare": Scenario(mode="plain"),  # the bare pass-through, not the gateway
}
HERE = Path(__file__).resolve().parent
POOL = [f"hist-{i}" for i in range(64)]


async def drive(port: int, scenario: Scenario, count: int, connections: int, first: int = 0) -> int:
    """Send `count` requests over `connections` keep-alive connections; the number answered 200."""
    sent, ok = [first], [0]

    async def worker(index: int) -> None:
        connection = await HttpConnection.open("127.0.0.1", port)
        try:
            while sent[0] < first + count:
                sent[0] += 1
                status, _, _ = await connection.exchange(
                    scenario.request(f"127.0.0.1:{port}", sent[0], index)
                )
                ok[0] += status == 200
        finally:
            await connection.close()

    await asyncio.gather(*(worker(index) for index in range(connections)))
    return ok[0]


def totals(out: Path) -> dict[str, int]:
    """Instructions by thread, from the dump's files (one per thread: --separate-threads)."""
    found = {}
    for path in sorted(out.parent.glob(out.name + "*")):
        text = path.read_text(errors="replace")
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        thread = re.search(r"^thread: (\d+)", text, re.M)
        if total and int(total.group(1)) and re.search(r"^part: 1$", text, re.M):
            found[thread.group(1) if thread else "?"] = int(total.group(1))
    return found


async def _admin(url: str, statement: str) -> None:
    import asyncpg  # only for a Postgres run

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default="existing")
    parser.add_argument("--requests", type=int, default=400, help="requests counted (default 400)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--postgres-url", help="a Postgres server where a database may be made and dropped")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (apt-get install -y valgrind)")
    scenario = CASES[args.case]
    with tempfile.TemporaryDirectory(prefix="gateway-instructions-") as tmp:
        folder = Path(tmp)
        database_url, admin, name = f"sqlite+aiosqlite:///{folder / 'gateway.db'}", None, ""
        if args.postgres_url:
            name = "gw_instructions_" + secrets.token_hex(4)
            admin = args.postgres_url
            asyncio.run(_admin(admin, f"CREATE DATABASE {name}"))
            database_url = args.postgres_url.rsplit("/", 1)[0] + "/" + name
        try:
            mock_port, port = free_port(), free_port()
            mock_argv = python_argv("-m", "gateway", "mock-upstream", "--port", str(mock_port))
            mock = Server("mock", mock_argv, mock_port, health_path="/v1/models")
            out = folder / "callgrind.out"
            bare = args.case == "bare"
            bare_argv = [str(HERE / "bare_proxy.py"), "--port", str(port), "--upstream", f"{mock.url}/v1"]
            served = python_argv(*bare_argv) if bare else python_argv("-m", "gateway", "serve")
            argv = [
                "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                f"--callgrind-out-file={out}", *served,
            ]  # fmt: skip
            env = {
                "GATEWAY_DATABASE_URL": database_url,
                "GATEWAY_UPSTREAM_URL": f"{mock.url}/v1",
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(port),
                "GATEWAY_MAX_CONVERSATIONS_PER_CALLER": "0",
            }
            # the bare pass-through routes only chat completions: any answer at / means it is up
            gateway = Server(
                "bare" if bare else "gateway", argv, port, env=env, health_path="/" if bare else "/healthz"
            )
            with running([mock, gateway]):
                mock.start(folder)
                asyncio.run(seed_conversations(database_url, TOKEN, POOL, 20))
                gateway.start(folder, timeout=300.0)  # python under valgrind starts some 50 times slower
                assert gateway.process is not None
                pid = str(gateway.process.pid)
                asyncio.run(drive(port, scenario, 200, args.connections))
                subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
                asyncio.run(drive(port, scenario, 50, args.connections, first=200))
                subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
                started = time.monotonic()
                ok = asyncio.run(drive(port, scenario, args.requests, args.connections, first=250))
                subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
                seconds = time.monotonic() - started
                found = totals(out)
        finally:
            if admin is not None:
                asyncio.run(_admin(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    if ok != args.requests or not found:
        sys.exit(f"{ok} of {args.requests} requests answered 200; callgrind dumps found: {len(found)}")
    per_thread = ", ".join(f"thread {thread}: {count / ok / 1e6:.3f}" for thread, count in found.items())
    total = sum(found.values()) / ok / 1e6
    print(
        f"{args.case}: {total:.3f} M instructions per request ({per_thread}); {ok} requests, {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()

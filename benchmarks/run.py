"""The gateway benchmark: one command, side by side with the direct mock and a bare pass-through.

    .venv/bin/python benchmarks/run.py            # 3 rounds, medians (about 6 minutes)
    .venv/bin/python benchmarks/run.py --quick    # 1 short round (about 1.5 minutes)

It starts the mock upstream (`python -m gateway mock-upstream`), the bare Starlette + httpx pass-through
(benchmarks/bare_proxy.py) and the gateway (SQLite file in a temporary folder; then Postgres with
`--workers 2`), pins the proxies to the first CPU and the mock and the load generator (wrk) to the
second, measures, prints Markdown tables and the issue's targets, and stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from load import LoadResult, Scenario, run_load, run_ttfb, wrk_available
from processes import (
    Pinning,
    Server,
    backends_pinned,
    busy_cpu_seconds,
    children_cpu_seconds,
    free_port,
    machine_busy_fraction,
    python_argv,
    running,
    wait_until_quiet,
)
from report import (
    Samples,
    flat_table,
    growth_checks,
    growth_table,
    machine,
    rss_table,
    scaleout_checks,
    target_checks,
    throughput_table,
    ttfb_table,
)
from seed import Growth

HERE = Path(__file__).resolve().parent

MOCK = "direct mock (no proxy)"
BARE = "bare pass-through (Starlette + httpx)"
GW_PLAIN = "gateway, no X-Conversation-Id (logged pass-through)"
GW_NEW = "gateway, new conversation per request"
GW_HIST = "gateway, existing conversation (20 stored messages sent)"
GW_RESP = "gateway, Responses API over chat (a new stored response per request)"
FLAT_SHORT = "100 stored messages, X-Max-History-Messages: 20"
FLAT_LONG = "10,000 stored messages, X-Max-History-Messages: 20"
PG_BARE = "bare pass-through (same run as Postgres)"
PG_NEW = "Postgres, 1 process, new conversation per request"
PG_HIST = "Postgres, 1 process, existing conversation (20 stored messages sent)"
PG_NEW_W2 = "Postgres, --workers 2, new conversation per request"
PG_HIST_W2 = "Postgres, --workers 2, existing conversation (20 sent)"
PG_NEW_R2 = "Postgres, 2 replicas (load spread over both), new conversation per request"
PG_HIST_R2 = "Postgres, 2 replicas (load spread over both), existing conversation (20 sent)"
PG_NEW_ASYNC = "Postgres, 1 process, synchronous_commit=off (no WAL flush per turn), new conversation"
PG_HIST_ASYNC = "Postgres, 1 process, synchronous_commit=off (no WAL flush per turn), existing conversation"
GROWN = "after growth (+10,000 conversations x 10 turns)"
SQ_NEW_GROWN = f"SQLite, {GROWN}, new conversation per request"
SQ_HIST_GROWN = f"SQLite, {GROWN}, existing conversation (20 sent)"
PG_NEW_GROWN = f"Postgres, 1 process, {GROWN}, new conversation per request"
PG_HIST_GROWN = f"Postgres, 1 process, {GROWN}, existing conversation (20 sent)"
GROWTH_CONVERSATIONS = 10_000
GROWTH_TURNS = 10

HISTORY_POOL = 64  # conversations the "existing conversation" case rotates over
SHORT_POOL = 100  # per round: each gets only a few turns, so it stays near 100 messages
LONG_POOL = 8


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs."""

    rounds: int
    c1_seconds: float
    c32_seconds: float
    warm_seconds: float
    ttfb_count: int
    flat_seconds: float

    @classmethod
    def choose(cls, args: argparse.Namespace) -> Plan:
        """--quick: one short round; otherwise three rounds (medians)."""
        if args.quick:
            return cls(rounds=1, c1_seconds=2, c32_seconds=3, warm_seconds=1, ttfb_count=50, flat_seconds=2)
        return cls(
            rounds=args.rounds,
            c1_seconds=4,
            c32_seconds=args.seconds,
            warm_seconds=1,
            ttfb_count=200,
            flat_seconds=4,
        )


class Bench:
    """Runs measurements against started servers and collects their per-round values."""

    def __init__(self, plan: Plan, pinning: Pinning, use_wrk: bool, quiet_wait: float) -> None:
        self.plan = plan
        self.pinning = pinning
        self.use_wrk = use_wrk
        self.quiet_wait = quiet_wait
        self.samples = Samples()
        self.run_id = secrets.token_hex(3)
        self.servers: list[Server] = []  # everything this script runs, to tell its CPU from others'
        self.foreign: list[float] = []  # CPUs' worth of other work on the machine during each run
        self.rss: dict[str, float] = {}  # resident memory (MiB) of each gateway configuration
        self.growth: dict[str, Growth] = {}  # database growth per backend
        self.pinned_backends: set[int] = set()  # Postgres backends kept on the load side's CPU

    def _own_cpu(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers) + children_cpu_seconds()

    def new_round(self, label: str) -> None:
        """Log the round; with --wait-quiet, first wait for other work on the machine to settle."""
        if self.quiet_wait > 0:
            busy = wait_until_quiet(self.quiet_wait)
            log(f"{label} (machine {busy:.0%} busy before it)")
        else:
            log(label)

    def _load(self, server: Server, scenario: Scenario, connections: int, seconds: float) -> LoadResult:
        pin = self.pinning.wrap(self.pinning.load, [])
        busy, own, started = busy_cpu_seconds(), self._own_cpu(), time.monotonic()
        result = run_load(
            server.url, scenario, connections=connections, seconds=seconds, pin=pin, use_wrk=self.use_wrk
        )
        other = (busy_cpu_seconds() - busy) - (self._own_cpu() - own)
        self.foreign.append(max(0.0, other) / (time.monotonic() - started))
        if result.errors:
            tail = server.log_tail()[-800:]
            log(f"  WARNING: {result.errors} failed requests against {server.name}:\n{tail}")
        return result

    def measure(self, case: str, server: Server, scenario: Callable[[str], Scenario]) -> None:
        """p50/p99 at concurrency 1, then req/s, p99 and the proxy's CPU per request at concurrency 32."""
        tag = f"{self.run_id}-{len(self.samples.values)}"
        self._load(server, scenario(f"w{tag}"), 8, self.plan.warm_seconds)
        single = self._load(server, scenario(f"a{tag}"), 1, self.plan.c1_seconds)
        cpu_before = server.cpu_seconds()
        loaded = self._load(server, scenario(f"b{tag}"), 32, self.plan.c32_seconds)
        cpu = server.cpu_seconds() - cpu_before
        self.samples.add(case, "p50_c1", single.p50_ms)
        self.samples.add(case, "p99_c1", single.p99_ms)
        self.samples.add(case, "rps_c32", loaded.rps)
        self.samples.add(case, "p99_c32", loaded.p99_ms)
        self.samples.add(case, "cpu_ms", cpu * 1000 / loaded.requests if loaded.requests else None)
        self.samples.add(case, "errors", single.errors + loaded.errors)
        log(f"  {case}: p50 {single.p50_ms:.3f} ms, {loaded.rps:,.0f} req/s")

    def measure_spread(
        self, case: str, servers: list[Server], scenario: Callable[[str, int, int], Scenario]
    ) -> None:
        """Like `measure`, with the c=32 load spread over several servers (one load generator each).

        Latency at concurrency 1 is measured on the first server; req/s is the sum over the servers.
        """
        tag = f"{self.run_id}-{len(self.samples.values)}"
        parts = len(servers)
        for part, server in enumerate(servers):
            self._load(server, scenario(f"w{tag}-{part}", part, parts), 4, self.plan.warm_seconds)
        single = self._load(servers[0], scenario(f"a{tag}", 0, parts), 1, self.plan.c1_seconds)
        cpu_before = sum(server.cpu_seconds() for server in servers)
        pin = self.pinning.wrap(self.pinning.load, [])

        def drive(part: int) -> LoadResult:
            load = scenario(f"b{tag}-{part}", part, parts)
            return run_load(
                servers[part].url,
                load,
                connections=32 // parts,
                seconds=self.plan.c32_seconds,
                pin=pin,
                use_wrk=self.use_wrk,
            )

        with concurrent.futures.ThreadPoolExecutor(parts) as pool:
            results = list(pool.map(drive, range(parts)))
        cpu = sum(server.cpu_seconds() for server in servers) - cpu_before
        requests = sum(r.requests for r in results)
        rps = sum(r.rps for r in results)
        errors = sum(r.errors for r in results)
        if errors:
            log(f"  WARNING: {errors} failed requests against {[s.name for s in servers]}")
        self.samples.add(case, "p50_c1", single.p50_ms)
        self.samples.add(case, "p99_c1", single.p99_ms)
        self.samples.add(case, "rps_c32", rps)
        self.samples.add(case, "p99_c32", max(r.p99_ms for r in results))
        self.samples.add(case, "cpu_ms", cpu * 1000 / requests if requests else None)
        self.samples.add(case, "errors", single.errors + errors)
        log(f"  {case}: p50 {single.p50_ms:.3f} ms, {rps:,.0f} req/s")

    def record_rss(self, label: str, servers: list[Server]) -> None:
        """Resident memory of a configuration's gateway processes (all their workers), in MiB."""
        self.rss[label] = sum(server.rss_bytes() for server in servers) / 2**20

    def measure_single(self, case: str, server: Server, scenario: Scenario) -> None:
        """Concurrency 1 only (the flat-cost case), with the proxy's CPU per request."""
        cpu_before = server.cpu_seconds()
        single = self._load(server, scenario, 1, self.plan.flat_seconds)
        cpu = server.cpu_seconds() - cpu_before
        self.samples.add(case, "p50_c1", single.p50_ms)
        self.samples.add(case, "p99_c1", single.p99_ms)
        self.samples.add(case, "cpu_ms", cpu * 1000 / single.requests if single.requests else None)
        log(f"  {case}: p50 {single.p50_ms:.3f} ms")

    def measure_ttfb(self, case: str, server: Server, scenario: Scenario) -> None:
        """Sequential streaming requests: time to the first chunk."""
        pin = self.pinning.wrap(self.pinning.load, [])
        result = run_ttfb(server.url, scenario, count=self.plan.ttfb_count, pin=pin)
        if result["failures"]:
            log(f"  WARNING: {result['failures']:.0f} failed streams against {server.name}")
        self.samples.add(case, "ttfb_p50", result["p50_first_ms"])
        self.samples.add(case, "ttfb_p99", result["p99_first_ms"])
        self.samples.add(case, "stream_p50", result["p50_total_ms"])
        log(f"  {case} (stream): first chunk p50 {result['p50_first_ms']:.3f} ms")


def log(message: str) -> None:
    """Progress goes to stderr; the report to stdout."""
    print(message, file=sys.stderr, flush=True)


def plain(_tag: str) -> Scenario:
    """No conversation header: the request as any OpenAI client sends it."""
    return Scenario(mode="plain")


def new_conversation(tag: str) -> Scenario:
    """A new X-Conversation-Id on every request."""
    return Scenario(mode="new", tag=tag)


def history_pool(_tag: str, part: int = 0, parts: int = 1) -> Scenario:
    """Round-robin over seeded conversations (a share of them per load generator); 20 messages sent."""
    share = HISTORY_POOL // parts
    return Scenario(mode="pool", prefix="hist", pool=share, offset=part * share, max_history=20)


def grown_pool(_tag: str) -> Scenario:
    """Round-robin over 64 of the growth's 10,000 conversations (20 stored messages each), all sent."""
    return Scenario(mode="pool", prefix="grow", pool=HISTORY_POOL, offset=4_321, max_history=20)


def responses(_tag: str) -> Scenario:
    """POST /v1/responses with a string input: translated to chat, stored as a new conversation's turn."""
    return Scenario(mode="plain", api="responses")


def gateway_server(
    name: str, database_url: str, upstream: str, pinning: Pinning, workers: int = 1, **settings: str
) -> Server:
    """`python -m gateway serve` with the given database, pinned to the proxy CPU."""
    port = free_port()
    env = {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_UPSTREAM_URL": upstream,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": str(workers),
        # One token makes every benchmark conversation: tens of thousands, past the default bound.
        "GATEWAY_MAX_CONVERSATIONS_PER_CALLER": "0",
        **{f"GATEWAY_{key.upper()}": value for key, value in settings.items()},
    }
    argv = pinning.wrap(pinning.proxy, python_argv("-m", "gateway", "serve"))
    return Server(name, argv, port, env=env)


async def seed_sqlite(database_url: str, rounds: int) -> None:
    """The conversations the SQLite run needs: history pool, and the flat-cost sets."""
    from load import TOKEN
    from seed import seed_conversations

    await seed_conversations(database_url, TOKEN, [f"hist-{i}" for i in range(HISTORY_POOL)], 20)
    for round_number in range(rounds):
        ids = [f"short{round_number}-{i}" for i in range(SHORT_POOL)]
        await seed_conversations(database_url, TOKEN, ids, 100)
    await seed_conversations(database_url, TOKEN, [f"long-{i}" for i in range(LONG_POOL)], 10_000)


def sqlite_suite(bench: Bench, folder: Path, mock: Server, bare: Server, flat: bool, growth: bool) -> None:
    """Mock, bare, and the gateway on SQLite, interleaved round by round; plus the flat-cost case."""
    database_url = f"sqlite+aiosqlite:///{folder / 'gateway.db'}"
    log("seeding SQLite conversations (64 x 20, flat-cost sets of 100 and 10,000 messages) ...")
    asyncio.run(seed_sqlite(database_url, bench.plan.rounds if flat else 0))
    with started(bench, folder, "gateway-sqlite", database_url, mock) as gateway:
        for round_number in range(bench.plan.rounds):
            bench.new_round(f"SQLite round {round_number + 1}/{bench.plan.rounds}")
            bench.measure(MOCK, mock, plain)
            bench.measure(BARE, bare, plain)
            bench.measure(GW_PLAIN, gateway, plain)
            bench.measure(GW_NEW, gateway, new_conversation)
            bench.measure(GW_HIST, gateway, history_pool)
            bench.measure(GW_RESP, gateway, responses)
            stream_tag = f"s{bench.run_id}-{round_number}"
            bench.measure_ttfb(MOCK, mock, Scenario(mode="plain", stream=True))
            bench.measure_ttfb(BARE, bare, Scenario(mode="plain", stream=True))
            bench.measure_ttfb(GW_NEW, gateway, Scenario(mode="new", tag=stream_tag, stream=True))
            bench.measure_ttfb(GW_RESP, gateway, Scenario(mode="plain", api="responses", stream=True))
            if flat:
                short = Scenario(mode="pool", prefix=f"short{round_number}", pool=SHORT_POOL, max_history=20)
                bench.measure_single(FLAT_SHORT, gateway, short)
                long = Scenario(mode="pool", prefix="long", pool=LONG_POOL, max_history=20)
                bench.measure_single(FLAT_LONG, gateway, long)
        bench.record_rss("SQLite, 1 process", [gateway])
        if growth:
            grow(bench, "SQLite", database_url)
            bench.measure(SQ_NEW_GROWN, gateway, new_conversation)
            bench.measure(SQ_HIST_GROWN, gateway, lambda _tag: grown_pool(_tag))
            bench.record_rss(f"SQLite, 1 process, {GROWN}", [gateway])


def grow(bench: Bench, backend: str, database_url: str) -> None:
    """Add 10,000 conversations of 10 turns (messages and request-log rows) in bulk; note the size."""
    from load import TOKEN
    from seed import seed_growth

    log(f"growth: adding {GROWTH_CONVERSATIONS:,} conversations x {GROWTH_TURNS} turns to {backend} ...")
    started = time.monotonic()
    found = asyncio.run(
        seed_growth(database_url, TOKEN, "grow", conversations=GROWTH_CONVERSATIONS, turns=GROWTH_TURNS)
    )
    bench.growth[backend] = found
    log(
        f"  {found.messages:,} messages in {time.monotonic() - started:.0f} s, "
        f"{found.bytes_per_message:,.0f} B each"
    )


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin(dsn: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def postgres_configurations(
    database_url: str, mock: Server, pinning: Pinning
) -> list[tuple[str, list[Server], list[tuple[str, Callable[..., Scenario]]]]]:
    """One process, `--workers 2`, and two replicas (two `gateway serve` processes), with their cases."""
    one = gateway_server("gateway-postgres", database_url, mock.url, pinning)
    workers = gateway_server("gateway-postgres-w2", database_url, mock.url, pinning, workers=2)
    first = gateway_server("gateway-postgres-a", database_url, mock.url, pinning)
    second = gateway_server("gateway-postgres-b", database_url, mock.url, pinning)
    return [
        ("Postgres, 1 process", [one], [(PG_NEW, new_conversation), (PG_HIST, history_pool)]),
        ("Postgres, --workers 2", [workers], [(PG_NEW_W2, new_conversation), (PG_HIST_W2, history_pool)]),
        (
            "Postgres, 2 replicas",
            [first, second],
            [(PG_NEW_R2, lambda tag, part, parts: new_conversation(tag)), (PG_HIST_R2, history_pool)],
        ),
    ]


SETTLE_SECONDS = 15.0


def settle(servers: list[Server]) -> None:
    """Wait until freshly started servers have done their start-up work in the background (processes.py)."""
    for server in servers:
        if server.settle(SETTLE_SECONDS) >= SETTLE_SECONDS:
            log(f"  WARNING: {server.name} was still busy {SETTLE_SECONDS:.0f} s after it answered")


@contextlib.contextmanager
def started(bench: Bench, folder: Path, name: str, database_url: str, mock: Server) -> Iterator[Server]:
    """One `gateway serve` process on `database_url`, started for the block and stopped after it."""
    gateway = gateway_server(name, database_url, mock.url, bench.pinning)
    with running([gateway]):
        gateway.start(folder)
        settle([gateway])
        bench.servers.append(gateway)
        yield gateway


def postgres_suite(
    bench: Bench, folder: Path, mock: Server, bare: Server, admin_url: str, growth: bool
) -> None:
    """The stateful cases on a fresh Postgres database: one process, `--workers 2`, two replicas; growth.

    The configurations run one after another in each round (each started, measured, stopped), so that
    the shared Postgres server never sees more than one configuration's connections.
    """
    dsn = _asyncpg_dsn(admin_url)
    try:
        asyncio.run(_admin(dsn, "SELECT 1"))
    except (OSError, ImportError, Exception) as exc:
        log(f"Postgres not reachable at {admin_url} ({type(exc).__name__}: {exc}): Postgres run skipped")
        return
    name = f"gateway_bench_{secrets.token_hex(4)}"
    base = admin_url.rsplit("/", 1)[0]
    database_url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(_admin(dsn, f'CREATE DATABASE "{name}"'))
    try:
        subprocess.run(
            python_argv("-m", "gateway", "migrate", "--database-url", database_url),
            check=True,
            capture_output=True,
        )
        from load import TOKEN
        from seed import seed_conversations

        ids = [f"hist-{i}" for i in range(HISTORY_POOL)]
        asyncio.run(seed_conversations(database_url, TOKEN, ids, 20))
        with backends_pinned(name, bench.pinning.load) as pinned:
            bench.pinned_backends = pinned
            for round_number in range(bench.plan.rounds):
                bench.new_round(f"Postgres round {round_number + 1}/{bench.plan.rounds}")
                bench.measure(PG_BARE, bare, plain)
                bench.measure_ttfb(PG_BARE, bare, Scenario(mode="plain", stream=True))
                for label, servers, cases in postgres_configurations(database_url, mock, bench.pinning):
                    with running(servers):
                        for server in servers:
                            server.start(folder)
                        settle(servers)
                        bench.servers += servers
                        for case, scenario in cases:
                            if len(servers) == 1:
                                bench.measure(case, servers[0], scenario)
                            else:
                                bench.measure_spread(case, servers, scenario)
                        if label == "Postgres, 1 process":
                            stream_tag = f"p{bench.run_id}-{round_number}"
                            bench.measure_ttfb(
                                PG_NEW, servers[0], Scenario(mode="new", tag=stream_tag, stream=True)
                            )
                        bench.record_rss(label, servers)
            # What the one WAL flush per turn costs on this disk: the same process with the database's
            # synchronous_commit off (SQLite's durability: a gateway crash loses nothing, a server crash may).
            asyncio.run(_admin(dsn, f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
            with started(bench, folder, "gateway-postgres-async", database_url, mock) as gateway:
                bench.measure(PG_NEW_ASYNC, gateway, new_conversation)
                bench.measure(PG_HIST_ASYNC, gateway, history_pool)
            asyncio.run(_admin(dsn, f'ALTER DATABASE "{name}" RESET synchronous_commit'))
            if growth:
                grow(bench, "Postgres", database_url)
                with started(bench, folder, "gateway-postgres-grown", database_url, mock) as gateway:
                    bench.measure(PG_NEW_GROWN, gateway, new_conversation)
                    bench.measure(PG_HIST_GROWN, gateway, grown_pool)
                    bench.record_rss(f"Postgres, 1 process, {GROWN}", [gateway])
    finally:
        asyncio.run(_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def print_report(bench: Bench, postgres: bool, flat: bool, busy: float, seconds: float) -> None:
    """The Markdown tables and the target checks."""
    samples = bench.samples
    print(f"\nMachine: {machine()}")
    print(f"Pinning: {bench.pinning.describe()}")
    generator = "wrk (1 thread)" if bench.use_wrk else "the Python asyncio load generator (not wrk)"
    print(f"Load generator: {generator}")
    print(f"Rounds: {bench.plan.rounds} (medians); CPU busy before start: {busy:.0%}; took {seconds:.0f} s")
    if bench.foreign:
        median, worst = statistics.median(bench.foreign), max(bench.foreign)
        print(
            f"Other processes on the machine during the measurements: median {median:.2f} CPU, "
            f"max {worst:.2f} CPU (of {os.cpu_count()}; in the Postgres run this includes the server's work)"
        )
    print()
    print(throughput_table(samples, [MOCK, BARE, GW_PLAIN, GW_NEW, GW_HIST, GW_RESP], MOCK))
    print()
    print(ttfb_table(samples, [MOCK, BARE, GW_NEW, GW_RESP]))
    if flat:
        print(
            "\nFlat cost (issue 3): concurrency 1, the same budgeted turn on short and long conversations\n"
        )
        print(flat_table(samples, [FLAT_SHORT, FLAT_LONG]))
    if postgres and samples.median(PG_NEW, "rps_c32") is not None:
        where = f"CPU {bench.pinning.load}" if bench.pinning.load is not None else "any CPU"
        print(
            "\nPostgres (every gateway process on the proxy CPU: workers and replicas add no CPU on this "
            f"machine; the server's backends for the gateway's connections on {where}, "
            f"{len(bench.pinned_backends)} pinned)\n"
        )
        cases = [
            PG_BARE,
            PG_NEW,
            PG_HIST,
            PG_NEW_W2,
            PG_HIST_W2,
            PG_NEW_R2,
            PG_HIST_R2,
            PG_NEW_ASYNC,
            PG_HIST_ASYNC,
        ]
        print(throughput_table(samples, cases, MOCK))
        print()
        print(ttfb_table(samples, [PG_BARE, PG_NEW]))
    if bench.growth:
        print(
            f"\nGrowth: {GROWTH_CONVERSATIONS:,} conversations x {GROWTH_TURNS} turns added, "
            "then the same cases\n"
        )
        grown = [SQ_NEW_GROWN, SQ_HIST_GROWN, PG_NEW_GROWN, PG_HIST_GROWN]
        print(throughput_table(samples, [case for case in grown if case in samples.order], MOCK))
        print()
        print(growth_table(bench.growth))
    if bench.rss:
        print()
        print(rss_table(bench.rss))
    if postgres and samples.median(PG_NEW, "rps_c32") is not None:
        print("\nTargets (issue 13: Postgres as fast as the bare pass-through; existing conversations):")
        pairs = [(PG_NEW, GW_NEW), (PG_HIST, GW_HIST), (PG_NEW_W2, GW_NEW), (PG_HIST_W2, GW_HIST)]
        pairs += [(PG_NEW_R2, GW_NEW), (PG_HIST_R2, GW_HIST)]
        for check in scaleout_checks(samples, mock=MOCK, bare=PG_BARE, pairs=pairs):
            print("  " + check.line())
        for check in growth_checks(samples, [(GW_NEW, SQ_NEW_GROWN), (GW_HIST, SQ_HIST_GROWN)]):
            print("  " + check.line())
        for check in growth_checks(samples, [(PG_NEW, PG_NEW_GROWN), (PG_HIST, PG_HIST_GROWN)]):
            print("  " + check.line())
    for check in scaleout_checks(samples, mock=MOCK, bare=BARE, pairs=[], sqlite_history=GW_HIST):
        print("  " + check.line())
    print("\nTargets (issue 2, SQLite, new conversation per request):")
    for check in target_checks(
        samples, mock=MOCK, bare=BARE, gateway=GW_NEW, stream_bare=BARE, stream_gateway=GW_NEW
    ):
        print("  " + check.line())
    failed = sum(samples.median(case, "errors") or 0 for case in samples.order)
    if failed:
        print(f"\nWARNING: some requests failed during the runs ({failed:.0f} median); see the log above.")


def main() -> None:
    """Parse the options, run the suites, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke run, ~1.5 min)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--seconds", type=float, default=8, help="seconds of each c=32 run (default 8)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the Postgres run")
    parser.add_argument("--no-flat", action="store_true", help="skip the flat-cost case")
    parser.add_argument(
        "--no-growth", action="store_true", help="skip the growth case (10,000 conversations x 10 turns)"
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="a Postgres server where a fresh database may be created and dropped",
    )
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator, not wrk")
    parser.add_argument("--json", type=Path, help="also write every per-round value to this file")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each round, wait up to SECONDS for other work on a shared machine to settle",
    )
    args = parser.parse_args()
    plan = Plan.choose(args)
    pinning = Pinning.detect()
    use_wrk = wrk_available() and not args.python_load
    if not use_wrk and not args.python_load:
        log(
            "wrk not found (install it: apt-get install wrk): using the Python load generator instead, whose "
            "own overhead makes the figures NOT comparable with the README's wrk figures."
        )
    busy = machine_busy_fraction()
    if busy > 0.15:
        log(f"WARNING: the machine is already {busy:.0%} busy: other work skews the figures.")
    bench = Bench(plan, pinning, use_wrk, args.wait_quiet)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        folder = Path(tmp)
        mock_port, bare_port = free_port(), free_port()
        mock = Server(
            "mock",
            pinning.wrap(
                pinning.load, python_argv("-m", "gateway", "mock-upstream", "--port", str(mock_port))
            ),
            mock_port,
            health_path="/v1/models",
        )
        bare = Server(
            "bare",
            pinning.wrap(
                pinning.proxy,
                python_argv(
                    str(HERE / "bare_proxy.py"), "--port", str(bare_port), "--upstream", f"{mock.url}/v1"
                ),
            ),
            bare_port,
            health_path="/",
        )
        with running([mock, bare]):
            mock.start(folder)
            bare.start(folder)
            bench.servers += [mock, bare]
            sqlite_suite(bench, folder, mock, bare, flat=not args.no_flat, growth=not args.no_growth)
            if not args.no_postgres:
                postgres_suite(bench, folder, mock, bare, args.postgres_url, growth=not args.no_growth)
    print_report(bench, not args.no_postgres, not args.no_flat, busy, time.monotonic() - started)
    if args.json:
        raw = {f"{case} | {metric}": values for (case, metric), values in bench.samples.values.items()}
        args.json.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()

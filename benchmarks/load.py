"""Load generation: wrk (with chat.lua) or, where wrk is missing, a small asyncio client; and the TTFB probe.

Run as a script it is the load side of a measurement (the benchmark starts it pinned to the load CPU):

    python benchmarks/load.py load --url URL --connections 32 --seconds 5 --scenario '{"mode": "new"}'
    python benchmarks/load.py ttfb --url URL --count 200 --scenario '{"mode": "new", "stream": true}'

Both print one line, `BENCH {json}` / `TTFB {json}`, that benchmarks/run.py parses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
CHAT_LUA = HERE / "chat.lua"
PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
TOKEN = "sk-bench"
USER_TEXT = "Hello! What is the weather like in Rome today?"


@dataclass(frozen=True)
class Scenario:
    """What each request looks like; chat.lua reads the same settings from BENCH_* variables."""

    mode: str = "plain"  # plain: no X-Conversation-Id; new: a new conversation per request; pool: rotate
    tag: str = "bench"  # prefix of new conversation ids (unique per measurement)
    prefix: str = "bench"  # pool conversations are <prefix>-0 .. <prefix>-(pool-1)
    pool: int = 1
    offset: int = 0  # pool conversations start at <prefix>-<offset>
    max_history: int | None = None
    stream: bool = False
    api: str = "chat"  # chat: /v1/chat/completions; responses: /v1/responses (a new stored response each)

    @property
    def path(self) -> str:
        """The endpoint the scenario posts to."""
        return RESPONSES_PATH if self.api == "responses" else PATH

    def env(self) -> dict[str, str]:
        """The BENCH_* variables chat.lua reads."""
        return {
            "BENCH_MODE": self.mode,
            "BENCH_TAG": self.tag,
            "BENCH_PREFIX": self.prefix,
            "BENCH_POOL": str(self.pool),
            "BENCH_OFFSET": str(self.offset),
            "BENCH_MAX_HISTORY": "" if self.max_history is None else str(self.max_history),
            "BENCH_STREAM": "1" if self.stream else "0",
            "BENCH_API": self.api,
        }

    def body(self) -> bytes:
        """The JSON body chat.lua sends, byte for byte."""
        text = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + USER_TEXT + '"}]'
        if self.api == "responses":
            text = '{"model":"gpt-4o-mini","input":"' + USER_TEXT + '"'
        return (text + (',"stream":true' if self.stream else "") + "}").encode()

    def request(self, host: str, counter: int, worker: int = 0) -> bytes:
        """One raw HTTP/1.1 request, with the conversation header the mode asks for."""
        body = self.body()
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            f"Authorization: Bearer {TOKEN}",
            f"Content-Length: {len(body)}",
        ]
        if self.max_history is not None:
            lines.append(f"X-Max-History-Messages: {self.max_history}")
        if self.api == "responses":
            pass  # every stored response starts its own conversation: no header
        elif self.mode == "new":
            lines.append(f"X-Conversation-Id: {self.tag}-{worker}-{counter}")
        elif self.mode == "pool":
            lines.append(f"X-Conversation-Id: {self.prefix}-{self.offset + counter % self.pool}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class LoadResult:
    """One load run: throughput, latency percentiles and failures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def wrk_available() -> bool:
    """True when the wrk binary is on PATH."""
    return shutil.which("wrk") is not None


def run_load(
    url: str, scenario: Scenario, *, connections: int, seconds: float, pin: list[str], use_wrk: bool
) -> LoadResult:
    """Drive `url` for `seconds` with `connections` keep-alive connections (wrk, or the asyncio fallback)."""
    if use_wrk:
        argv = [
            *pin,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(CHAT_LUA),
            url,
        ]
        env = {**os.environ, **scenario.env()}
    else:
        scenario_json = json.dumps(dataclasses.asdict(scenario))
        argv = [*pin, sys.executable, str(HERE / "load.py"), "load", "--url", url]
        argv += ["--connections", str(connections), "--seconds", str(seconds), "--scenario", scenario_json]
        env = dict(os.environ)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line[6:])
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["status_errors"] + data["socket_errors"],
    )


def run_ttfb(url: str, scenario: Scenario, *, count: int, pin: list[str]) -> dict[str, float]:
    """Sequential streaming requests: p50/p99 time to the first `data:` event and to the end, in ms."""
    argv = [*pin, sys.executable, str(HERE / "load.py"), "ttfb", "--url", url, "--count", str(count)]
    argv += ["--scenario", json.dumps(dataclasses.asdict(scenario))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=count + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("TTFB ")), None)
    if line is None:
        raise RuntimeError(f"TTFB probe failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    result: dict[str, float] = json.loads(line[5:])
    return result


class HttpConnection:
    """A keep-alive HTTP/1.1 client connection that reads Content-Length and chunked responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        """Connect to host:port."""
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, float, float]:
        """Send one request; return (status, seconds to the first `data:` or body byte, seconds in all)."""
        started = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = head.lower()
        first: float | None = None
        if b"transfer-encoding: chunked" in headers:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if first is None and (b"data:" in data or size == 0):
                    first = time.perf_counter() - started
                if size == 0:
                    break
        else:
            length = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
            await self.reader.readexactly(length)
            first = time.perf_counter() - started
        return status, first or 0.0, time.perf_counter() - started

    async def close(self) -> None:
        """Close the socket."""
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def _load(url: str, scenario: Scenario, connections: int, seconds: float) -> dict[str, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors = [0, 0]
    counter = [0]
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        conn = await HttpConnection.open(host, port)
        try:
            while time.perf_counter() < deadline:
                counter[0] += 1
                try:
                    status, _first, total = await conn.exchange(scenario.request(parts.netloc, counter[0]))
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors[1] += 1
                    await conn.close()
                    conn = await HttpConnection.open(host, port)
                    continue
                latencies.append(total)
                errors[0] += status >= 400
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "status_errors": errors[0],
        "socket_errors": errors[1],
        "p50_us": int(_percentile(latencies, 0.50) * 1e6),
        "p99_us": int(_percentile(latencies, 0.99) * 1e6),
    }


async def _ttfb(url: str, scenario: Scenario, count: int) -> dict[str, float]:
    parts = urlsplit(url)
    conn = await HttpConnection.open(parts.hostname or "127.0.0.1", parts.port or 80)
    firsts: list[float] = []
    totals: list[float] = []
    failures = 0
    try:
        for index in range(count + 10):
            status, first, total = await conn.exchange(scenario.request(parts.netloc, index))
            if index < 10:
                continue  # warm-up
            failures += status != 200
            firsts.append(first)
            totals.append(total)
    finally:
        await conn.close()
    return {
        "p50_first_ms": statistics.median(firsts) * 1000,
        "p99_first_ms": _percentile(firsts, 0.99) * 1000,
        "p50_total_ms": statistics.median(totals) * 1000,
        "failures": failures,
    }


def main() -> None:
    """The load side of one measurement, run in its own (pinned) process."""
    parser = argparse.ArgumentParser(description="benchmark load generator (see benchmarks/run.py)")
    parser.add_argument("what", choices=["load", "ttfb"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--scenario", default="{}")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    scenario = Scenario(**json.loads(args.scenario))
    if args.what == "load":
        print("BENCH " + json.dumps(asyncio.run(_load(args.url, scenario, args.connections, args.seconds))))
    else:
        print("TTFB " + json.dumps(asyncio.run(_ttfb(args.url, scenario, args.count))))


if __name__ == "__main__":
    main()

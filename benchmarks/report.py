"""Medians over rounds, the result tables (Markdown, ready for the README) and the target checks."""

from __future__ import annotations

import os
import platform
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Samples:
    """Per-round values of every metric, keyed by (case, metric)."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    order: list[str] = field(default_factory=list)

    def add(self, case: str, metric: str, value: float | None) -> None:
        """Record one round's value."""
        if case not in self.order:
            self.order.append(case)
        if value is not None:
            self.values[(case, metric)].append(value)

    def median(self, case: str, metric: str) -> float | None:
        """The median over rounds, or None when never measured."""
        found = self.values.get((case, metric))
        return statistics.median(found) if found else None


def machine() -> str:
    """CPU model, cores and Python version, as the README states them."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def throughput_table(samples: Samples, cases: list[str], reference: str) -> str:
    """Latency at concurrency 1 and throughput at concurrency 32, one row per case."""
    base = samples.median(reference, "p50_c1")
    lines = [
        "| case | p50 c=1 (ms) | p99 c=1 (ms) | added p50 c=1 (ms) | req/s c=32 | p99 c=32 (ms) "
        "| proxy CPU per request (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        p50 = samples.median(case, "p50_c1")
        added = None if p50 is None or base is None or case == reference else p50 - base
        lines.append(
            f"| {case} | {_fmt(p50)} | {_fmt(samples.median(case, 'p99_c1'))} | {_fmt(added)} "
            f"| {_fmt(samples.median(case, 'rps_c32'), 0)} | {_fmt(samples.median(case, 'p99_c32'), 1)} "
            f"| {_fmt(samples.median(case, 'cpu_ms'), 3)} |"
        )
    return "\n".join(lines)


def ttfb_table(samples: Samples, cases: list[str]) -> str:
    """Streaming: time to the first chunk and to the end of the stream, concurrency 1."""
    lines = [
        "| streaming case | first chunk p50 (ms) | first chunk p99 (ms) | whole stream p50 (ms) |",
        "|---|---:|---:|---:|",
    ]
    for case in cases:
        lines.append(
            f"| {case} | {_fmt(samples.median(case, 'ttfb_p50'))} | {_fmt(samples.median(case, 'ttfb_p99'))} "
            f"| {_fmt(samples.median(case, 'stream_p50'))} |"
        )
    return "\n".join(lines)


def flat_table(samples: Samples, cases: list[str]) -> str:
    """The flat-cost case: the same budgeted turn on short and very long conversations."""
    lines = [
        "| conversation | p50 c=1 (ms) | p99 c=1 (ms) | proxy CPU per request (ms) |",
        "|---|---:|---:|---:|",
    ]
    for case in cases:
        lines.append(
            f"| {case} | {_fmt(samples.median(case, 'p50_c1'))} | {_fmt(samples.median(case, 'p99_c1'))} "
            f"| {_fmt(samples.median(case, 'cpu_ms'), 3)} |"
        )
    short, long = (samples.median(case, "p50_c1") for case in cases[:2])
    if short and long:
        lines.append("")
        lines.append(f"p50 ratio, long / short: {long / short:.2f}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Check:
    """One target of issue 2, with the figures it compares."""

    name: str
    passed: bool | None
    detail: str

    def line(self) -> str:
        """`PASS`/`MISS`/`n/a` and the figures."""
        verdict = "n/a " if self.passed is None else ("PASS" if self.passed else "MISS")
        return f"{verdict}  {self.name}: {self.detail}"


def target_checks(
    samples: Samples, *, mock: str, bare: str, gateway: str, stream_bare: str, stream_gateway: str
) -> list[Check]:
    """The three targets: throughput, added latency, time to first chunk."""
    checks = []
    rps_gw, rps_bare = samples.median(gateway, "rps_c32"), samples.median(bare, "rps_c32")
    if rps_gw is None or rps_bare is None:
        checks.append(Check("req/s at c=32 >= bare pass-through", None, "not measured"))
    else:
        detail = f"{rps_gw:,.0f} vs {rps_bare:,.0f} req/s ({rps_gw / rps_bare:.2f}x)"
        checks.append(Check("req/s at c=32 >= bare pass-through", rps_gw >= rps_bare, detail))
    p_mock, p_bare, p_gw = (samples.median(case, "p50_c1") for case in (mock, bare, gateway))
    if p_mock is None or p_bare is None or p_gw is None:
        checks.append(Check("added p50 at c=1 <= 2x bare's", None, "not measured"))
    else:
        added_gw, added_bare = p_gw - p_mock, p_bare - p_mock
        detail = f"{added_gw:.3f} ms vs 2 x {added_bare:.3f} ms = {2 * added_bare:.3f} ms"
        checks.append(Check("added p50 at c=1 <= 2x bare's", added_gw <= 2 * added_bare, detail))
    t_bare, t_gw = samples.median(stream_bare, "ttfb_p50"), samples.median(stream_gateway, "ttfb_p50")
    if t_bare is None or t_gw is None:
        checks.append(Check("time to first chunk within 1 ms of bare's", None, "not measured"))
    else:
        detail = f"{t_gw:.3f} ms vs {t_bare:.3f} ms (+{t_gw - t_bare:.3f} ms)"
        checks.append(Check("time to first chunk within 1 ms of bare's", t_gw - t_bare <= 1.0, detail))
    return checks


def growth_table(growth: dict[str, Any]) -> str:
    """Database size per stored message after the growth seeding (conversations, request log, indexes)."""
    lines = [
        "| database | messages added | database growth (MB) | bytes per stored message |",
        "|---|---:|---:|---:|",
    ]
    for backend, found in growth.items():
        grown = (found.bytes_after - found.bytes_before) / 1e6
        lines.append(f"| {backend} | {found.messages:,} | {grown:,.1f} | {found.bytes_per_message:,.0f} |")
    return "\n".join(lines)


def rss_table(rss: dict[str, float]) -> str:
    """Resident memory of each gateway configuration (all its processes), after its measurements."""
    lines = ["| gateway configuration | resident memory (MiB, all processes) |", "|---|---:|"]
    lines += [f"| {label} | {mb:,.0f} |" for label, mb in rss.items()]
    return "\n".join(lines)


def scaleout_checks(
    samples: Samples,
    *,
    mock: str,
    bare: str,
    pairs: list[tuple[str, str]],
    sqlite_history: str | None = None,
) -> list[Check]:
    """Issue 13: each Postgres case at least the bare pass-through's req/s at c=32, and its added p50
    at c=1 at most twice the SQLite gateway's in the same case; SQLite's existing-conversation case at
    1.5x the bare pass-through's req/s."""
    checks = []
    rps_bare, p_mock = samples.median(bare, "rps_c32"), samples.median(mock, "p50_c1")
    for case, sqlite_case in pairs:
        rps = samples.median(case, "rps_c32")
        if rps is None or rps_bare is None:
            checks.append(Check(f"{case}: req/s >= bare", None, "not measured"))
        else:
            detail = f"{rps:,.0f} vs {rps_bare:,.0f} req/s ({rps / rps_bare:.2f}x)"
            checks.append(Check(f"{case}: req/s at c=32 >= bare", rps >= rps_bare, detail))
        p_case, p_sqlite = samples.median(case, "p50_c1"), samples.median(sqlite_case, "p50_c1")
        if p_case is None or p_sqlite is None or p_mock is None:
            checks.append(Check(f"{case}: added p50 <= 2x SQLite's", None, "not measured"))
        else:
            added, added_sqlite = p_case - p_mock, p_sqlite - p_mock
            detail = f"{added:.3f} ms vs 2 x {added_sqlite:.3f} ms = {2 * added_sqlite:.3f} ms"
            checks.append(
                Check(f"{case}: added p50 at c=1 <= 2x SQLite's", added <= 2 * added_sqlite, detail)
            )
    if sqlite_history is not None:
        rps = samples.median(sqlite_history, "rps_c32")
        if rps is None or rps_bare is None:
            checks.append(Check("SQLite existing conversation: req/s >= 1.5x bare", None, "not measured"))
        else:
            detail = (
                f"{rps:,.0f} vs 1.5 x {rps_bare:,.0f} = {1.5 * rps_bare:,.0f} req/s ({rps / rps_bare:.2f}x)"
            )
            checks.append(
                Check("SQLite existing conversation: req/s >= 1.5x bare", rps >= 1.5 * rps_bare, detail)
            )
    return checks


def growth_checks(samples: Samples, pairs: list[tuple[str, str]]) -> list[Check]:
    """Per-turn cost after growth: the proxy's CPU per request and p50, before vs after (a ratio)."""
    checks = []
    for before, after in pairs:
        cpu_before, cpu_after = samples.median(before, "cpu_ms"), samples.median(after, "cpu_ms")
        p_before, p_after = samples.median(before, "p50_c1"), samples.median(after, "p50_c1")
        if None in (cpu_before, cpu_after, p_before, p_after):
            continue
        assert cpu_before and cpu_after and p_before and p_after
        detail = (
            f"CPU per request {cpu_after:.3f} vs {cpu_before:.3f} ms ({cpu_after / cpu_before:.2f}x), "
            f"p50 {p_after:.3f} vs {p_before:.3f} ms ({p_after / p_before:.2f}x)"
        )
        checks.append(
            Check(f"{after}: per-turn cost unchanged (within 1.25x)", cpu_after <= 1.25 * cpu_before, detail)
        )
    return checks

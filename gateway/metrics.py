"""Prometheus metrics: one registry per app, label children cached so the hot path is a dict lookup.

With `PROMETHEUS_MULTIPROC_DIR` set (prometheus-client's multiprocess mode, used by `gateway serve
--workers N`), every worker writes its values to files in that directory and `/metrics` on any worker
reports the sum over all workers. Without it, each process reports its own numbers.

A turn counts some fifteen values. prometheus-client's public `inc` and `observe` check on every call that
the metric is a labelled child (which `labels()` children always are) and `observe` walks the buckets in
Python: about 3% of a turn's CPU. So each cached child is reduced once to its values' own increments
(`Adder`, `Observer`): the same values, in memory or in the multiprocess files, that the public calls
would change (tests/unit/test_operations.py compares the two, in both modes).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as mp
from prometheus_client.process_collector import ProcessCollector

from gateway.attempts import AttemptRecord
from gateway.money import PICODOLLARS_PER_USD

# The classic text format (version 0.0.4) that every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# LLM calls take from tens of milliseconds (cached, tiny) to minutes (long reasoning).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FIRST_CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
LOCK_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
TOKEN_KINDS = ("prompt", "completion", "cached", "reasoning", "history")


class Metrics:
    """The gateway's counters, histograms and gauges, registered in a registry of their own."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = r = CollectorRegistry()
        # fmt: off
        self.requests = Counter(
            "gateway_requests", "HTTP requests by route, method and status.", ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds", "Time from request to the end of the response body.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_latency_seconds", "From sending a request upstream to the end of its answer.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.first_chunk_seconds = Histogram(
            "gateway_stream_first_chunk_seconds", "Time from request to the first body bytes of a stream.",
            ["route"], buckets=FIRST_CHUNK_BUCKETS, registry=r,
        )
        self.streams = Gauge(
            "gateway_streams_in_flight", "Streamed (text/event-stream) responses in progress.",
            registry=r, multiprocess_mode="livesum",
        )
        self.tokens = Counter(
            "gateway_tokens", "Chat completion tokens by model and kind (history: stored history re-sent).",
            ["model", "kind"], registry=r,
        )
        self.cost = Counter(
            "gateway_cost_usd", "Chat completion cost in USD by model.", ["model"], registry=r,
        )
        self.history_cost = Counter(
            "gateway_history_cost_usd", "Part of the cost paid for re-sent history, by model.", ["model"],
            registry=r,
        )
        self.lock_wait = Histogram(
            "gateway_lock_wait_seconds", "Time a turn waited for its conversation's lock.",
            buckets=LOCK_BUCKETS, registry=r,
        )
        # fmt: on
        if multiprocess_dir is None:
            ProcessCollector(registry=r)
        self._adders: dict[tuple[Any, ...], Adder] = {}
        self._observers: dict[tuple[Any, ...], Observer] = {}

    def _add(self, metric: Counter, *labels: str) -> Adder:
        """The increment of `metric`'s labelled child, made once and then served from a dict."""
        key = (id(metric), *labels)
        adder = self._adders.get(key)
        if adder is None:
            adder = self._adders[key] = counter_adder(metric.labels(*labels))
        return adder

    def _observe(self, metric: Histogram, *labels: str) -> Observer:
        """The observation of `metric`'s labelled child, made once and then served from a dict."""
        key = (id(metric), *labels)
        observer = self._observers.get(key)
        if observer is None:
            observer = self._observers[key] = Observer(metric.labels(*labels) if labels else metric)
        return observer

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished HTTP request and its duration."""
        self._add(self.requests, route, method, str(status))(1)
        self._observe(self.request_seconds, route)(seconds)

    def observe_first_chunk(self, route: str, seconds: float) -> None:
        """Record when a streamed response sent its first body bytes."""
        self._observe(self.first_chunk_seconds, route)(seconds)

    def observe_upstream(self, endpoint: str, seconds: float) -> None:
        """Record how long one upstream call took, to the end of its body."""
        self._observe(self.upstream_seconds, endpoint)(seconds)

    def observe_lock_wait(self, seconds: float) -> None:
        """Record how long a turn waited for its conversation's lock."""
        self._observe(self.lock_wait)(seconds)

    def observe_attempt(self, attempt: AttemptRecord) -> None:
        """Add an attempt's tokens and cost (as written to the request log) to the counters."""
        if attempt.prompt_tokens is None:
            return  # no usage reported: nothing was billed that the gateway knows of
        model = attempt.response_model or attempt.model or "unknown"
        counts = (
            attempt.prompt_tokens,
            attempt.completion_tokens,
            attempt.cached_tokens,
            attempt.reasoning_tokens,
            attempt.history_tokens,
        )
        for kind, value in zip(TOKEN_KINDS, counts, strict=True):
            if value is not None:
                self._add(self.tokens, model, kind)(value)
        # A float counter in USD: the division is as exact as the counter (whole picodollars are exact).
        if attempt.cost_pusd is not None:
            self._add(self.cost, model)(attempt.cost_pusd / PICODOLLARS_PER_USD)
        if attempt.history_cost_pusd is not None:
            self._add(self.history_cost, model)(attempt.history_cost_pusd / PICODOLLARS_PER_USD)

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every worker's files in multiprocess mode."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """In multiprocess mode, drop this process's live gauges (its in-flight streams) from the files."""
        if self.multiprocess_dir is not None:
            mp.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


Adder = Callable[[float], None]


def counter_adder(child: Any) -> Adder:
    """A labelled counter child's increment: its value's own `inc` (what the public `inc` ends in)."""
    add: Adder = child._value.inc
    return add


class Observer:
    """A histogram child's observation: the sum and the first bucket whose bound holds the value, each
    increased through its value's own `inc` (what the public `observe` does, with the bucket found by
    bisection instead of a walk in Python)."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Any) -> None:
        self._bounds: list[float] = list(child._upper_bounds)  # ends with +Inf: every value has a bucket
        self._buckets: list[Adder] = [bucket.inc for bucket in child._buckets]
        self._sum: Adder = child._sum.inc

    def __call__(self, amount: float) -> None:
        """Observe `amount` (seconds)."""
        self._sum(amount)
        self._buckets[bisect_left(self._bounds, amount)](1)


def prepare_multiprocess_dir(path: str) -> None:
    """Create the multiprocess directory and remove an earlier run's files (prometheus-client asks so)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))

"""Prometheus metrics with prometheus-client, exact across worker processes.

Counters and histograms are derived from the usage records every request produces
(:class:`MetricsSink` sits in front of the access log and the ledger, so the request path needs
no extra code); breaker transitions are counted as they happen; gauges, and counters kept by
other parts (cache, ledger), are sampled by :meth:`Metrics.sample` at every scrape and every
:data:`SAMPLE_INTERVAL_S` in each worker.

With several worker processes ``trioproxy serve`` sets ``PROMETHEUS_MULTIPROC_DIR``: each
process writes its values to files there and a scrape, whichever worker answers it, sums them
(gauges: over live workers; a breaker's state: the max). prometheus-client renders every value
exactly (no ``%g`` rounding); money is counted in integer micro-USD.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

from trioproxy.ledger.record import UsageRecord, UsageSink

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_INTERVAL_S = 1.0
SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
MIRRORED = {
    "semantic_lookups": "Semantic cache lookups.",
    "semantic_hits": "Semantic cache hits.",
    "semantic_below_threshold": "Semantic lookups whose nearest entry was below the threshold.",
    "semantic_embed_skipped": "Semantic lookups skipped (embedder saturated or down).",
    "semantic_verifier_rejects": "Semantic matches in the band refused by the pair verifier.",
    "semantic_unconfirmed": "Semantic matches held back until enough distinct keys confirm.",
    "semantic_near_threshold_misses": (
        "Semantic misses just below the floor or refused by the guard or verifier."
    ),
    "semantic_probe_flags": "Times a key passed the near-threshold-miss limit in a window.",
    "cache_writes_dropped": "Cache writes skipped because the write queue was full.",
    "ledger_spooled_records": "Ledger records put in the local spool (database down or slow).",
    "ledger_lost_records": "Ledger records that could be neither queued nor spooled.",
}
"""Counters other parts keep as plain integers, mirrored here (``trioproxy_<name>_total``)."""

disable_created_metrics()  # no ``_created`` series: they double the output and nobody reads them


class Metrics:
    """Every metric family of one worker process."""

    def __init__(self) -> None:
        self.multiprocess = MULTIPROC_ENV in os.environ
        if self.multiprocess:  # the library picks its value class at import; pick again
            values.ValueClass = values.get_value_class()
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "trioproxy_requests", "Requests by route, serving target, status and cache result.",
            ("route", "target", "status", "cache"), registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "trioproxy_tokens", "Tokens consumed upstream by route, target and type.",
            ("route", "target", "type"), registry=r,
        )  # fmt: skip
        self.cost = Counter(
            "trioproxy_cost_microusd", "Upstream cost in micro-USD (1e-6 USD) by team and route.",
            ("team", "route"), registry=r,
        )  # fmt: skip
        self.saved = Counter(
            "trioproxy_saved_microusd", "Cost avoided by cache hits, micro-USD, by team and route.",
            ("team", "route"), registry=r,
        )  # fmt: skip
        self.refusals = Counter(
            "trioproxy_refusals", "Requests refused before going upstream (budgets, rate "
            "limits, overload), by reason.", ("reason",), registry=r,
        )  # fmt: skip
        self.attempts = Counter(
            "trioproxy_upstream_attempts", "Upstream attempts by target and outcome.",
            ("target", "outcome"), registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "trioproxy_fallbacks", "Attempts on a later target of a chain after a failure.",
            ("route", "target"), registry=r,
        )  # fmt: skip
        self.hedges = Counter(
            "trioproxy_hedges", "Hedged attempts launched while an earlier one was still running.",
            ("route", "target"), registry=r,
        )  # fmt: skip
        self.breaker_transitions = Counter(
            "trioproxy_breaker_transitions", "Circuit breaker transitions by target and new state.",
            ("target", "to"), registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "trioproxy_request_duration_seconds", "Time from request to the last byte, by route.",
            ("route",), buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.ttfb = Histogram(
            "trioproxy_time_to_first_byte_seconds", "Time from request to the upstream's first "
            "byte, by route.", ("route",), buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.attempt_duration = Histogram(
            "trioproxy_upstream_attempt_duration_seconds", "Duration of one upstream attempt, by "
            "target.", ("target",), buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.request_tokens = Histogram(
            "trioproxy_request_tokens", "Tokens per request that went upstream, by type.", ("type",),
            buckets=TOKENS, registry=r,
        )  # fmt: skip
        live: Any = {"registry": r, "multiprocess_mode": "livesum"}
        self.in_flight = Gauge("trioproxy_in_flight_requests", "Requests being served.", **live)
        self.open_streams = Gauge("trioproxy_open_streams", "Streams being relayed.", **live)
        self.relay_buffered = Gauge(
            "trioproxy_relay_buffered_events", "Events waiting in the relay channels of open "
            "streams (a slow client fills them).", **live,
        )  # fmt: skip
        self.ledger_queue = Gauge(
            "trioproxy_ledger_queue_records", "Ledger records waiting for the database.", **live
        )
        self.journal_bytes = Gauge(
            "trioproxy_ledger_journal_bytes", "Bytes in the ledger journal's live segments.", **live
        )
        self.cache_write_queue = Gauge(
            "trioproxy_cache_write_queue", "Cache writes waiting.", **live
        )
        self.breaker_open = Gauge(
            "trioproxy_breaker_open", "1 while the target's circuit breaker is open.",
            ("target",), registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self._mirrors = {
            name: Counter(f"trioproxy_{name}", help_, registry=r)
            for name, help_ in MIRRORED.items()
        }
        self._mirrored: dict[str, int] = dict.fromkeys(MIRRORED, 0)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    # -- from usage records ------------------------------------------------------------------
    def _child(self, family: Any, *labels: str) -> Any:
        """``family.labels(*labels)``, remembered: the library validates and locks on
        every call, and a request counts a dozen series."""
        key = (id(family), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def observe(self, rec: UsageRecord) -> None:
        if rec.kind == "attempt":
            target = rec.target or ""
            self._child(self.attempts, target, rec.outcome).inc()
            self._child(self.attempt_duration, target).observe(rec.latency_ms / 1000)
            if rec.hedge_role == "fallback":
                self._child(self.fallbacks, rec.route, target).inc()
            elif rec.hedge_role == "hedge":
                self._child(self.hedges, rec.route, target).inc()
            return
        target = rec.target or ""
        self._child(self.requests, rec.route, target, str(rec.status), rec.cache).inc()
        if rec.outcome == "denied":
            self._child(self.refusals, rec.error_kind or "unknown").inc()
        if rec.input_tokens:
            self._child(self.tokens, rec.route, target, "input").inc(rec.input_tokens)
        if rec.cache_read_tokens:
            self._child(self.tokens, rec.route, target, "cache_read").inc(rec.cache_read_tokens)
        if writes := rec.cache_write_5m_tokens + rec.cache_write_1h_tokens:
            self._child(self.tokens, rec.route, target, "cache_write").inc(writes)
        if rec.output_tokens:
            self._child(self.tokens, rec.route, target, "output").inc(rec.output_tokens)
        if rec.input_tokens or rec.output_tokens:  # requests that consumed tokens upstream
            self._child(self.request_tokens, "input").observe(rec.input_tokens)
            self._child(self.request_tokens, "output").observe(rec.output_tokens)
        if rec.cost_micros:
            self._child(self.cost, rec.team, rec.route).inc(rec.cost_micros)
        if rec.saved_micros:
            self._child(self.saved, rec.team, rec.route).inc(rec.saved_micros)
        self._child(self.request_duration, rec.route).observe(rec.latency_ms / 1000)
        if rec.ttfb_ms is not None:
            self._child(self.ttfb, rec.route).observe(rec.ttfb_ms / 1000)

    def breaker_transition(self, target: str, to: str) -> None:
        self.breaker_transitions.labels(target, to).inc()

    # -- sampled -----------------------------------------------------------------------------
    def sample(
        self, *, in_flight: int, open_streams: int, relay_buffered: int,
        breakers: Mapping[str, bool], ledger_queue: int = 0, journal_bytes: int = 0,
        cache_write_queue: int = 0, counts: Mapping[str, int] | None = None,
    ) -> None:  # fmt: skip
        """Set the gauges; advance the mirrored counters to ``counts`` (this process's totals)."""
        self.in_flight.set(in_flight)
        self.open_streams.set(open_streams)
        self.relay_buffered.set(relay_buffered)
        self.ledger_queue.set(ledger_queue)
        self.journal_bytes.set(journal_bytes)
        self.cache_write_queue.set(cache_write_queue)
        for target, is_open in breakers.items():
            self.breaker_open.labels(target).set(1 if is_open else 0)
        for name, total in (counts or {}).items():
            delta = total - self._mirrored[name]
            if delta > 0:
                self._mirrors[name].inc(delta)
                self._mirrored[name] = total

    def render(self) -> tuple[bytes, str]:
        """The exposition text (every worker's values in multi-process mode) and its type."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsSink:
    """Counts each usage record, then hands it on."""

    def __init__(self, inner: UsageSink, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def submit(self, record: UsageRecord) -> None:
        self.metrics.observe(record)
        self.inner.submit(record)

    def intend(self, record: UsageRecord) -> int:
        return self.inner.intend(record)

    def resolve(self, token: int) -> None:
        self.inner.resolve(token)


def mark_worker_dead(pid: int) -> None:
    """For the serve runner when a worker exits: drop its live gauges (counters stay summed)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        multiprocess.mark_process_dead(pid, path)


__all__ = ["MULTIPROC_ENV", "Metrics", "MetricsSink", "mark_worker_dead"]

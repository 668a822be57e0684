"""Prometheus metrics with prometheus-client, exact across worker processes.

Counters and histograms are derived from the usage records every request produces
(:class:`MetricsSink` sits in front of the access log and the ledger, so the request path needs
no extra code). A record only adds to in-process sums; :meth:`Metrics.flush` writes them to the
prometheus-client values, one ``inc`` per series and histogram bucket for everything recorded
since the last flush (in multi-process mode every ``inc`` is a locked write to a memory-mapped
file: ~50-90 µs per request when done record by record). The app's flusher task flushes as soon
as it runs after a record (the next scheduler turn: a scrape sees a request's counts once its
answer is out), and every scrape and :meth:`Metrics.render` flush first. Breaker transitions are counted as they happen; gauges, and counters kept by
other parts (cache, ledger), are sampled by :meth:`Metrics.sample` at every scrape and every
:data:`SAMPLE_INTERVAL_S` in each worker.

With several worker processes ``trioproxy serve`` sets ``PROMETHEUS_MULTIPROC_DIR``: each
process writes its values to files there and a scrape, whichever worker answers it, sums them
(gauges: over live workers; a breaker's state: the max). prometheus-client renders every value
exactly (no ``%g`` rounding); money is counted in integer micro-USD.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

import trio
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
from trioproxy.ledger.sinks import SideFailures
from trioproxy.telemetry.metrics_dir import MULTIPROC_ENV

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
    "semantic_model_failures": (
        "Band hits the pair cross-encoder could not judge (it failed to load or run): misses."
    ),
    "semantic_near_threshold_misses": (
        "Semantic misses just below the floor or refused by the guard or verifier."
    ),
    "semantic_probe_flags": "Times a key passed the near-threshold-miss limit in a window.",
    "cache_writes_dropped": "Cache writes skipped because the write queue was full.",
    "cache_store_errors": (
        "Calls to the embedded cache file (cache.sqlite3) that failed: lookups answered as "
        "misses, writes skipped."
    ),
    "ledger_spooled_records": "Ledger records put in the local spool (database down or slow).",
    "ledger_lost_records": (
        "Ledger records that could be neither written, spooled nor held in memory."
    ),
    "ledger_held_records": (
        "Ledger records held in memory because the state disk refused them (full, read-only); "
        "written once it or the database takes them."
    ),
    "budget_alerts_fired": "Budget alerts fired (threshold or limit crossed).",
    "budget_alert_checks_dropped": "Budget alert checks dropped because their queue was full.",
    "budget_alert_webhook_failures": "Alert webhook deliveries that failed.",
    "budget_journal_dropped": (
        "Settled budget reservations dropped from the recovery journal at its cap (a Redis "
        "state rebuild cannot replay them)."
    ),
    "budget_settles_retried": (
        "Budget settles the store did not take at first that landed when sent again."
    ),
    "budget_settles_dropped": (
        "Budget settles given up before they landed (retry queue full, lease ended, shutdown): "
        "their reservations count at the reserved amount."
    ),
}
"""Counters other parts keep as plain integers, mirrored here (``trioproxy_<name>_total``)."""
ALERT_QUEUE = "trioproxy_budget_alert_checks_queued"
ALERT_SERIES = (
    ALERT_QUEUE,
    *(f"trioproxy_budget_{n}_total" for n in ("alert_checks_dropped", "alerts_fired",
                                             "alert_webhook_failures")),
)  # fmt: skip
"""The budget alert sender's series, in :class:`~trioproxy.budget.alerts.AlertStatistics`'s
order (queued, dropped, fired, webhook failures): what the dashboard sums over the workers."""

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
        self.rejected = Counter(
            "trioproxy_rejected_requests", "Requests refused before routing (bad key, malformed "
            "body, unknown model or path, method, body cap, full worker, HTTP refusals, a bug "
            "met before routing), by error kind and status; they have an access line but no "
            "usage record.",
            ("kind", "status"), registry=r,
        )  # fmt: skip
        self.rejected_lines_dropped = Counter(
            "trioproxy_rejected_lines_dropped", "Access lines of refused requests dropped by the "
            "per-worker rate limit (the requests are still counted).", registry=r,
        )  # fmt: skip
        self.attempts = Counter(
            "trioproxy_upstream_attempts", "Upstream attempts by target and outcome.",
            ("target", "outcome"), registry=r,
        )  # fmt: skip
        self.bad_usage = Counter(
            "trioproxy_upstream_bad_usage", "Upstream answers whose usage was malformed (counts "
            "that are no counts), by target: before any byte relayed the attempt failed, after "
            "it was metered by the gateway's estimate.", ("target",), registry=r,
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
        self.auth_failures = Counter(
            "trioproxy_admin_auth_failures", "Failed authentications on the admin port: a wrong "
            "user name or password at sign-in (password), a wrong admin key at sign-in, on the "
            "admin API or /metrics (admin_key).", ("kind",), registry=r,
        )  # fmt: skip
        self.auth_throttled = Counter(
            "trioproxy_admin_auth_throttled", "Sign-ins and admin keys refused (429) by the admin "
            "port's throttle, by the limit that refused them: a client address blocked, a user "
            "name's delay, a device cookie blocked.", ("limit",), registry=r,
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
        self.alert_queue = Gauge(ALERT_QUEUE, "Budget alert checks waiting.", **live)
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
        self._counts: dict[Any, float] = {}
        """Counter child -> amount recorded since the last flush."""
        self._observed: dict[Any, list[float]] = {}
        """Histogram child -> values observed since the last flush."""
        self.dirty = trio.Event()
        """Set when something waits for :meth:`flush` (the app's flusher waits on it)."""

    # -- from usage records ------------------------------------------------------------------
    def _child(self, family: Any, *labels: str) -> Any:
        """``family.labels(*labels)``, remembered: the library validates and locks on
        every call, and a request counts a dozen series."""
        key = (id(family), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def _inc(self, family: Any, labels: tuple[str, ...], amount: float = 1) -> None:
        child = self._child(family, *labels)
        self._counts[child] = self._counts.get(child, 0) + amount

    def _obs(self, family: Any, labels: tuple[str, ...], value: float) -> None:
        child = self._child(family, *labels)
        got = self._observed.get(child)
        if got is None:
            self._observed[child] = [value]
        else:
            got.append(value)

    def observe(self, rec: UsageRecord) -> None:
        """Add ``rec`` to the pending sums (written by :meth:`flush`)."""
        self.dirty.set()
        inc, obs = self._inc, self._obs
        target = rec.target or ""
        if rec.kind == "attempt":
            inc(self.attempts, (target, rec.outcome))
            obs(self.attempt_duration, (target,), rec.latency_ms / 1000)
            if rec.hedge_role == "fallback":
                inc(self.fallbacks, (rec.route, target))
            elif rec.hedge_role == "hedge":
                inc(self.hedges, (rec.route, target))
            return
        route = rec.route
        inc(self.requests, (route, target, str(rec.status), rec.cache))
        if rec.outcome == "denied":
            inc(self.refusals, (rec.error_kind or "unknown",))
        if rec.input_tokens:
            inc(self.tokens, (route, target, "input"), rec.input_tokens)
        if rec.cache_read_tokens:
            inc(self.tokens, (route, target, "cache_read"), rec.cache_read_tokens)
        if writes := rec.cache_write_5m_tokens + rec.cache_write_1h_tokens:
            inc(self.tokens, (route, target, "cache_write"), writes)
        if rec.output_tokens:
            inc(self.tokens, (route, target, "output"), rec.output_tokens)
        if rec.input_tokens or rec.output_tokens:  # requests that consumed tokens upstream
            obs(self.request_tokens, ("input",), rec.input_tokens)
            obs(self.request_tokens, ("output",), rec.output_tokens)
        if rec.cost_micros:
            inc(self.cost, (rec.team, route), rec.cost_micros)
        if rec.saved_micros:
            inc(self.saved, (rec.team, route), rec.saved_micros)
        obs(self.request_duration, (route,), rec.latency_ms / 1000)
        if rec.ttfb_ms is not None:
            obs(self.ttfb, (route,), rec.ttfb_ms / 1000)

    def rejected_request(self, kind: str, status: int) -> None:
        """A request refused before routing (see :mod:`trioproxy.edge.refusals`)."""
        self.dirty.set()
        self._inc(self.rejected, (kind, str(status)))

    def upstream_bad_usage(self, target: str) -> None:
        """An attempt whose usage was malformed (see :mod:`trioproxy.core.usage`)."""
        self.dirty.set()
        self._inc(self.bad_usage, (target,))

    def admin_auth_failure(self, kind: str) -> None:
        """A wrong password (``password``) or admin key (``admin_key``) on the admin port."""
        self.dirty.set()
        self._inc(self.auth_failures, (kind,))

    def admin_auth_throttled(self, limit: str) -> None:
        """An attempt the admin port's throttle refused (``address``, ``user``, ``device``)."""
        self.dirty.set()
        self._inc(self.auth_throttled, (limit,))

    def rejected_line_dropped(self) -> None:
        self.dirty.set()
        family = self.rejected_lines_dropped  # no labels: the family is its own value
        self._counts[family] = self._counts.get(family, 0) + 1

    def flush(self) -> None:
        """Write what was recorded since the last flush to the prometheus-client values."""
        self.dirty = trio.Event()
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for child, amount in counts.items():
            child.inc(amount)
        for child, got in observed.items():
            _observe_all(child, got)

    def breaker_transition(self, target: str, to: str) -> None:
        self.breaker_transitions.labels(target, to).inc()

    # -- sampled -----------------------------------------------------------------------------
    def sample(
        self, *, in_flight: int, open_streams: int, relay_buffered: int,
        breakers: Mapping[str, bool], ledger_queue: int = 0, journal_bytes: int = 0,
        cache_write_queue: int = 0, alert_queue: int = 0,
        counts: Mapping[str, int] | None = None,
    ) -> None:  # fmt: skip
        """Set the gauges; advance the mirrored counters to ``counts`` (this process's totals);
        flush what the usage records added."""
        self.flush()
        self.in_flight.set(in_flight)
        self.open_streams.set(open_streams)
        self.relay_buffered.set(relay_buffered)
        self.ledger_queue.set(ledger_queue)
        self.journal_bytes.set(journal_bytes)
        self.cache_write_queue.set(cache_write_queue)
        self.alert_queue.set(alert_queue)
        for target, is_open in breakers.items():
            self.breaker_open.labels(target).set(1 if is_open else 0)
        for name, total in (counts or {}).items():
            delta = total - self._mirrored[name]
            if delta > 0:
                self._mirrors[name].inc(delta)
                self._mirrored[name] = total

    def totals(self, names: Sequence[str]) -> dict[str, float]:
        """The value of each unlabelled series in ``names`` (full sample names, e.g.
        ``trioproxy_budget_alerts_fired_total``), summed as a scrape sums it: every worker's
        in multi-process mode (file reads: call it off the event loop), else this process's.
        A series nobody wrote is 0."""
        wanted = dict.fromkeys(names, 0.0)
        for family in self._scraped().collect():
            for sample in family.samples:
                if sample.name in wanted and not sample.labels:
                    wanted[sample.name] += sample.value
        return wanted

    def render(self, *, flush: bool = True) -> tuple[bytes, str]:
        """The exposition text (every worker's values in multi-process mode) and its type.
        ``flush=False`` when called off the event loop (the caller flushed on it)."""
        if flush:
            self.flush()
        return generate_latest(self._scraped()), CONTENT_TYPE_LATEST

    def _scraped(self) -> CollectorRegistry:
        """What a scrape reads: every worker's files in multi-process mode, else this
        process's registry."""
        if not self.multiprocess:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry


def _observe_all(child: Any, got: list[float]) -> None:
    """``child.observe(v)`` for every ``v`` in ``got``, as one write per bucket touched and
    one to the sum (the histogram child's own values, as its ``observe`` writes them)."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in got:  # another prometheus-client layout: one observe each
            child.observe(v)
        return
    per = [0] * len(bounds)
    for v in got:  # observe(): the first bucket whose upper bound is >= v (the last is +Inf)
        per[bisect_left(bounds, v)] += 1
    total.inc(sum(got))
    for i, n in enumerate(per):
        if n:
            buckets[i].inc(n)


class MetricsSink:
    """Counts each usage record, then hands it on (also when counting it failed)."""

    def __init__(self, inner: UsageSink, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.failures = SideFailures("counting a usage record in the metrics")

    def submit(self, record: UsageRecord) -> None:
        try:
            self.metrics.observe(record)
        except Exception:
            self.failures.caught()
        self.inner.submit(record)

    def submit_all(self, records: Sequence[UsageRecord]) -> None:
        for record in records:
            try:
                self.metrics.observe(record)
            except Exception:
                self.failures.caught()
        self.inner.submit_all(records)

    def intend(self, record: UsageRecord) -> int:
        return self.inner.intend(record)

    def resolve(self, token: int) -> None:
        self.inner.resolve(token)


__all__ = ["ALERT_SERIES", "Metrics", "MetricsSink"]

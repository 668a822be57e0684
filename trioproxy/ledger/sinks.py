"""Usage sinks beside the ledger: the access log (one line per request), a structured log line
per record, and a list for tests.

A sink in front of the ledger (the metrics, the access log) runs its side effect under
:class:`SideFailures` and hands the record on whatever happened: its failure (a logging
filter, a full stderr pipe, a formatting bug) is counted and logged at most once per
:data:`FAILURE_LOG_INTERVAL_S`, never raised into the request, never a record lost."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence

import orjson

from trioproxy.ledger.record import UsageRecord, UsageSink
from trioproxy.telemetry.logs import log_fields

log = logging.getLogger("trioproxy.usage")
access_log = logging.getLogger("trioproxy.access")
failures_log = logging.getLogger(__name__)

FAILURE_LOG_INTERVAL_S = 60.0
"""A failing side effect of a sink logs its exception at most once this often."""


class SideFailures:
    """The exceptions of one sink's side effect: counted, the first one of each interval
    logged with its traceback (and how many were not logged since the last one)."""

    def __init__(self, what: str, interval_s: float = FAILURE_LOG_INTERVAL_S) -> None:
        self.what = what
        self.interval_s = interval_s
        self.count = 0
        self._unlogged = 0
        self._next_log = -math.inf

    def caught(self) -> None:
        """Call in the ``except Exception`` block of the side effect."""
        self.count += 1
        now = time.monotonic()
        if now < self._next_log:
            self._unlogged += 1
            return
        self._next_log = now + self.interval_s
        unlogged, self._unlogged = self._unlogged, 0
        try:
            failures_log.exception(
                "%s failed (%d more failure(s) not logged since the last line); the usage "
                "record still goes to the ledger", self.what, unlogged,
            )  # fmt: skip
        except Exception:  # the logging itself is what fails: the count is all we can keep
            pass


def access_fields(request: UsageRecord, attempts: list[UsageRecord]) -> dict[str, object]:
    """The access line's fields: who, which route and chain, every target tried and how it
    ended, the outcome, cache, tokens, cost and timings. No prompt, answer or secret."""
    return {
        "request_id": request.request_id, "endpoint": request.endpoint,
        "key": request.key_name, "team": request.team,
        "user": request.user, "feature": request.feature, "route": request.route,
        "chain": request.chain, "stream": request.stream,
        "attempts": [
            {"target": a.target, "role": a.hedge_role, "outcome": a.outcome, "status": a.status,
             "error": a.error_kind, "ms": round(a.latency_ms, 1)}
            for a in attempts
        ],
        "winner": request.target, "status": request.status, "outcome": request.outcome,
        "error_kind": request.error_kind, "cache": request.cache,
        "input_tokens": request.input_tokens, "output_tokens": request.output_tokens,
        "cache_read_tokens": request.cache_read_tokens,
        "cache_write_tokens": request.cache_write_5m_tokens + request.cache_write_1h_tokens,
        "reasoning_tokens": request.reasoning_tokens,
        "estimated": request.estimated, "cost_usd": request.cost_micros / 1_000_000,
        "saved_usd": request.saved_micros / 1_000_000,
        "prompt_cache_saved_usd": request.cache_saved_micros / 1_000_000,
        "ttfb_ms": None if request.ttfb_ms is None else round(request.ttfb_ms, 1),
        "duration_ms": round(request.latency_ms, 1),
        "client_left": request.error_kind == "client_disconnected",
    }  # fmt: skip


class AccessLogSink:
    """Logs one ``trioproxy.access`` line per request (with its attempts), then hands every
    record on. A request's attempt records arrive just before its request record."""

    def __init__(self, inner: UsageSink) -> None:
        self.inner = inner
        self._attempts: dict[str, list[UsageRecord]] = {}
        self.failures = SideFailures("the access log line")

    def submit(self, record: UsageRecord) -> None:
        if record.kind == "attempt":
            self._attempts.setdefault(record.request_id, []).append(record)
        else:
            self._log(record, self._attempts.pop(record.request_id, []))
        self.inner.submit(record)

    def submit_all(self, records: Sequence[UsageRecord]) -> None:
        attempts = [r for r in records if r.kind == "attempt"]
        for request in records:
            if request.kind != "attempt":
                earlier = self._attempts.pop(request.request_id, [])
                self._log(request, [*earlier, *attempts] if earlier else attempts)
        self.inner.submit_all(records)

    def _log(self, request: UsageRecord, attempts: list[UsageRecord]) -> None:
        try:
            if access_log.isEnabledFor(logging.INFO):
                fields = access_fields(request, attempts)
                log_fields(access_log, logging.INFO, "request", fields)
        except Exception:
            self.failures.caught()

    def intend(self, record: UsageRecord) -> int:
        return self.inner.intend(record)

    def resolve(self, token: int) -> None:
        self.inner.resolve(token)


class LogSink:
    """One ``trioproxy.usage`` line per record (the ledger of a gateway without one)."""

    def __init__(self) -> None:
        self.failures = SideFailures("the usage log line")

    def submit(self, record: UsageRecord) -> None:
        try:
            if log.isEnabledFor(logging.INFO):
                log.info("%s", orjson.dumps(record.to_dict()).decode())
        except Exception:
            self.failures.caught()

    def submit_all(self, records: Sequence[UsageRecord]) -> None:
        for record in records:
            self.submit(record)

    def intend(self, record: UsageRecord) -> int:
        return -1

    def resolve(self, token: int) -> None:
        pass


class ListSink:
    """Keeps every record in memory. Tests only."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []
        self.intents: dict[int, UsageRecord] = {}
        """Provisional records not resolved yet."""
        self._tokens = itertools.count()

    def submit(self, record: UsageRecord) -> None:
        self.records.append(record)

    def submit_all(self, records: Sequence[UsageRecord]) -> None:
        for record in records:
            self.submit(record)

    def intend(self, record: UsageRecord) -> int:
        token = next(self._tokens)
        self.intents[token] = record
        return token

    def resolve(self, token: int) -> None:
        self.intents.pop(token, None)


__all__ = [
    "FAILURE_LOG_INTERVAL_S",
    "AccessLogSink",
    "ListSink",
    "LogSink",
    "SideFailures",
    "access_fields",
]

"""Prometheus metrics, derived from the usage records every request produces.

:class:`MetricsSink` sits in front of the real sink (the ledger): it counts
each record, then hands it on, so the request path needs no extra code.
Gauges (in-flight requests, breakers, queues) are read when ``/metrics`` is
scraped. Counters are per worker process, as Prometheus expects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from trioproxy.ledger.record import UsageRecord, UsageSink

Labels = tuple[tuple[str, str], ...]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels) + "}"


class MetricsSink:
    def __init__(self, inner: UsageSink) -> None:
        self.inner = inner
        self.requests: Counter[Labels] = Counter()
        self.attempts: Counter[Labels] = Counter()
        self.tokens: Counter[Labels] = Counter()
        self.cost: dict[Labels, float] = {}
        self.saved: dict[Labels, float] = {}

    def submit(self, record: UsageRecord) -> None:
        if record.kind == "request":
            base = (("team", record.team), ("route", record.route))
            self.requests[(*base, ("status", str(record.status)), ("cache", record.cache))] += 1
            self.tokens[(*base, ("direction", "input"))] += record.input_tokens
            self.tokens[(*base, ("direction", "output"))] += record.output_tokens
            self.cost[base] = self.cost.get(base, 0.0) + record.cost_usd
            self.saved[base] = self.saved.get(base, 0.0) + record.saved_usd
        else:
            self.attempts[(("target", record.target or ""), ("outcome", record.outcome))] += 1
        self.inner.submit(record)

    def intend(self, record: UsageRecord) -> int:
        return self.inner.intend(record)

    def resolve(self, token: int) -> None:
        self.inner.resolve(token)


def render(sink: MetricsSink, gauges: Iterable[tuple[str, str, Labels, float]]) -> bytes:
    """Prometheus text format: the counters, then ``(name, help, labels, value)`` gauges."""
    lines: list[str] = []

    def family(name: str, kind: str, help_: str, values: Iterable[tuple[Labels, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{_fmt(labels)} {value:g}" for labels, value in values)

    family(
        "trioproxy_requests_total",
        "counter",
        "Requests by team, route, status and cache.",
        sink.requests.items(),
    )
    family(
        "trioproxy_attempts_total",
        "counter",
        "Upstream attempts by target and outcome.",
        sink.attempts.items(),
    )
    family("trioproxy_tokens_total", "counter", "Tokens consumed upstream.", sink.tokens.items())
    family("trioproxy_cost_usd_total", "counter", "Upstream cost in USD.", sink.cost.items())
    family(
        "trioproxy_saved_usd_total",
        "counter",
        "Cost avoided by cache hits, in USD.",
        sink.saved.items(),
    )
    seen: set[str] = set()
    for name, help_, labels, value in gauges:
        if name not in seen:
            seen.add(name)
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name}{_fmt(labels)} {value:g}")
    return ("\n".join(lines) + "\n").encode()


__all__ = ["Labels", "MetricsSink", "render"]

"""What the metrics sample from a worker's parts besides the request path: the cache
writer's and the semantic cache's counters, the ledger writer's queue and journal, the budget
gate's recovery journal and alert sender. :meth:`~trioproxy.edge.app.Gateway.sample_metrics`
hands them to :meth:`~trioproxy.edge.metrics.Metrics.sample`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trioproxy.ledger.record import UsageSink
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.caching import ResponseCache

_SEMANTIC = ("lookups", "hits", "below_threshold", "embed_skipped", "verifier_rejects",
             "unconfirmed", "model_failures")  # fmt: skip


@dataclass(slots=True)
class PartStats:
    counts: dict[str, int] = field(default_factory=dict)
    """Counters mirrored from the parts' own statistics, by metric name."""
    ledger_queue: int = 0
    journal_bytes: int = 0
    cache_write_queue: int = 0
    alert_queue: int = 0


def sample_parts(
    cache: ResponseCache | None, ledger: UsageSink, admission: Admission | None
) -> PartStats:
    out = PartStats()
    counts = out.counts
    if cache is not None:
        w = cache.writer.statistics()
        out.cache_write_queue, counts["cache_writes_dropped"] = w.queued, w.dropped_full
        if cache.file is not None:  # answers or vectors (or both) in the embedded file
            counts["cache_store_errors"] = cache.file.errors
        if cache.semantic is not None:
            sem = cache.semantic.stats
            for name in _SEMANTIC:
                counts["semantic_" + name] = getattr(sem, name)
            probes = cache.semantic.probes
            counts["semantic_near_threshold_misses"] = probes.near_misses
            counts["semantic_probe_flags"] = sum(probes.flags.values())
    writer = getattr(ledger, "writer", None)
    if writer is not None:
        ls = writer.statistics()
        out.ledger_queue = ls.buffered
        counts["ledger_spooled_records"], counts["ledger_lost_records"] = ls.spooled, ls.lost
        counts["ledger_held_records"] = ls.held_total
        if writer.journal is not None:
            out.journal_bytes = writer.journal.statistics().bytes
    if admission is not None:
        gate = admission.gate
        if gate.recovery is not None:
            counts["budget_journal_dropped"] = gate.recovery.stats.dropped
        if gate.settles is not None:
            st = gate.settles.statistics()
            counts["budget_settles_retried"] = st.landed
            counts["budget_settles_dropped"] = st.dropped + st.expired
        if gate.alerts is not None:
            a = gate.alerts.statistics()
            out.alert_queue = a.queued
            counts["budget_alerts_fired"] = a.fired
            counts["budget_alert_checks_dropped"] = a.dropped
            counts["budget_alert_webhook_failures"] = a.webhook_failures
    return out


__all__ = ["PartStats", "sample_parts"]

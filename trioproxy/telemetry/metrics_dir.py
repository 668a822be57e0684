"""The prometheus multiprocess directory of ``trioproxy serve``: its environment variable
(set by ``serve`` for every process it starts) and what a dead worker leaves there.

prometheus-client is imported only when a worker has died: the supervisor (``runner.py``)
loads nothing else of the metrics (``edge/metrics.py`` keeps the families)."""

from __future__ import annotations

import os

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def mark_worker_dead(pid: int) -> None:
    """For the serve runner when a worker exits: drop its live gauges (counters stay summed)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


__all__ = ["MULTIPROC_ENV", "mark_worker_dead"]

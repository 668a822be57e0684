"""The durable spend ledger: usage records written off the hot path, rolled up daily, reported.

* :class:`LedgerWriter` (``writer.py``): the :class:`UsageSink`; bounded channel, batches,
  spool on failure, replay, bounded shutdown flush.
* :class:`LedgerBackend` (``backend.py``): SQLite (``sqlite.py``, default) or PostgreSQL
  (``postgres.py``, day partitions + retention); both keep the ``ledger_daily`` rollup.
* :class:`Spool` (``spool.py``): the append-only JSON-lines file in ``state_dir``.
* :func:`spend_report` / :func:`report_main` (``report.py``): ``trioproxy report``.
"""

from __future__ import annotations

from trioproxy.ledger.backend import DIMENSIONS, LedgerBackend, ReportRow
from trioproxy.ledger.factory import open_backend, open_writer
from trioproxy.ledger.record import UsageRecord, UsageSink
from trioproxy.ledger.report import format_report, parse_since, report_main, spend_report
from trioproxy.ledger.spool import Spool
from trioproxy.ledger.writer import LedgerStatistics, LedgerWriter

__all__ = [
    "DIMENSIONS",
    "LedgerBackend",
    "LedgerStatistics",
    "LedgerWriter",
    "ReportRow",
    "Spool",
    "UsageRecord",
    "UsageSink",
    "format_report",
    "open_backend",
    "open_writer",
    "parse_since",
    "report_main",
    "spend_report",
]

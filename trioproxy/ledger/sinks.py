"""Usage sinks that are not the ledger: a structured log line, and a list for tests."""

from __future__ import annotations

import logging

import orjson

from trioproxy.ledger.record import UsageRecord

log = logging.getLogger("trioproxy.usage")


class LogSink:
    def submit(self, record: UsageRecord) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("%s", orjson.dumps(record.to_dict()).decode())


class ListSink:
    """Keeps every record in memory. Tests only."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def submit(self, record: UsageRecord) -> None:
        self.records.append(record)


__all__ = ["ListSink", "LogSink"]

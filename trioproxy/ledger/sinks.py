"""Usage sinks that are not the ledger: a structured log line, and a list for tests."""

from __future__ import annotations

import itertools
import logging

import orjson

from trioproxy.ledger.record import UsageRecord

log = logging.getLogger("trioproxy.usage")


class LogSink:
    def submit(self, record: UsageRecord) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("%s", orjson.dumps(record.to_dict()).decode())

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

    def intend(self, record: UsageRecord) -> int:
        token = next(self._tokens)
        self.intents[token] = record
        return token

    def resolve(self, token: int) -> None:
        self.intents.pop(token, None)


__all__ = ["ListSink", "LogSink"]

"""Shared helpers for the ledger tests: record factories and direct reads of the raw tables.

The direct reads use plain sqlite3 / psycopg so that checks never go through the code under test.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import trio

from trioproxy.ledger.backend import METRICS, LedgerBackend
from trioproxy.ledger.postgres import PostgresLedger
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.sqlite import SqliteLedger

TEAMS = ("red", "blue", "green")
FEATURES = ("chat", "search")
USERS = ("ann", "bob", "cid", "dee")
MODELS = ("gpt-small", "claude-big", None)
ROUTES = ("default", "cheap")


def make_records(
    n: int, *, seed: int = 1, ts: float | None = None, prefix: str = "r"
) -> list[UsageRecord]:
    """``n`` request records, roughly one in three followed by an attempt record."""
    rng = random.Random(seed)
    base = time.time() if ts is None else ts
    out: list[UsageRecord] = []
    i = 0
    while len(out) < n:
        rid = f"{prefix}-{seed}-{i}"
        common = dict(
            ts=base + rng.random(),
            request_id=rid,
            key_name="k",
            team=rng.choice(TEAMS),
            user=rng.choice(USERS),
            feature=rng.choice(FEATURES),
            route=rng.choice(ROUTES),
            target=rng.choice(MODELS),
            provider_model="prov-model",
            input_tokens=rng.randint(1, 5000),
            cache_read_tokens=rng.choice((0, rng.randint(1, 9000))),
            cache_write_5m_tokens=rng.choice((0, 0, rng.randint(1, 3000))),
            cache_write_1h_tokens=rng.choice((0, 0, rng.randint(1, 3000))),
            output_tokens=(n_out := rng.randint(0, 2000)),
            reasoning_tokens=rng.randint(0, n_out),
            cost_micros=rng.randint(0, 100_000),
            saved_micros=rng.randint(0, 10_000) if rng.random() < 0.2 else 0,
            cache_saved_micros=rng.randint(-500, 5_000),
        )
        out.append(UsageRecord(kind="request", **common))  # type: ignore[arg-type]
        if len(out) < n and rng.random() < 0.33:
            out.append(UsageRecord(kind="attempt", attempt=1, **common))  # type: ignore[arg-type]
        i += 1
    return out


@dataclass
class Totals:
    """``count`` and the sum of every other rollup metric (all integers), in METRICS order."""

    values: tuple[int, ...]

    @property
    def count(self) -> int:
        return self.values[0]

    def __getattr__(self, name: str) -> int:
        if name in METRICS:
            return self.values[METRICS.index(name)]
        raise AttributeError(name)

    def tuple(self) -> tuple[int, ...]:
        return self.values


def totals_of(records: list[UsageRecord], kind: str = "request") -> Totals:
    rs = [r for r in records if r.kind == kind]
    return Totals((len(rs), *(sum(getattr(r, m) for r in rs) for m in METRICS[1:])))


_SUMS = ", ".join(f"coalesce(sum({m}), 0)" for m in METRICS[1:])


@dataclass
class Target:
    """Where a test's ledger lives: ``kind`` is ``sqlite`` (``where`` a file) or ``postgres``."""

    kind: str
    where: str

    async def open(self) -> LedgerBackend:
        if self.kind == "sqlite":
            return await SqliteLedger.open(self.where)
        return await PostgresLedger.open(self.where, pool_timeout=1.0)

    def _sql(self, sql: str) -> list[tuple[object, ...]]:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.where)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.where, autocommit=True) as pg:
            return pg.execute(sql).fetchall()

    async def sql(self, sql: str) -> list[tuple[object, ...]]:
        return await trio.to_thread.run_sync(self._sql, sql)

    async def raw_totals(self, kind: str = "request") -> Totals:
        (row,) = await self.sql(f"SELECT count(*), {_SUMS} FROM ledger_raw WHERE kind = '{kind}'")
        return Totals(tuple(int(v) for v in row))  # type: ignore[call-overload]

    async def rollup_totals(self, kind: str = "request") -> Totals:
        (row,) = await self.sql(
            f"SELECT coalesce(sum(requests), 0), {_SUMS} FROM ledger_daily WHERE kind = '{kind}'"
        )
        return Totals(tuple(int(v) for v in row))  # type: ignore[call-overload]

    async def distinct_keys(self) -> tuple[int, int]:
        """(rows, distinct idempotency keys) in ledger_raw."""
        (row,) = await self.sql(
            "SELECT count(*), count(DISTINCT request_id || '/' || kind || '/' || attempt) "
            "FROM ledger_raw"
        )
        return int(row[0]), int(row[1])  # type: ignore[call-overload]


def target_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if kind == "sqlite":
        return Target("sqlite", str(tmp_path / "ledger.sqlite3"))
    return Target("postgres", request.getfixturevalue("pg_url"))


async def wait_until(pred: Callable[[], bool], *, limit: float = 20.0) -> None:
    """Poll a background task's statistics until ``pred`` holds (fails after ``limit`` s)."""
    with trio.fail_after(limit):
        while not pred():
            await trio.sleep(0.01)

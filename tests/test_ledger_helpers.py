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

from trioproxy.ledger.backend import LedgerBackend
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
            output_tokens=rng.randint(0, 2000),
            cost_usd=round(rng.random() / 10, 6),
            saved_usd=round(rng.random() / 100, 6) if rng.random() < 0.2 else 0.0,
        )
        out.append(UsageRecord(kind="request", **common))  # type: ignore[arg-type]
        if len(out) < n and rng.random() < 0.33:
            out.append(UsageRecord(kind="attempt", attempt=1, **common))  # type: ignore[arg-type]
        i += 1
    return out


@dataclass
class Totals:
    count: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    saved_usd: float

    def approx(self) -> tuple[int, int, int, object, object]:
        return (
            self.count,
            self.input_tokens,
            self.output_tokens,
            pytest.approx(self.cost_usd, rel=1e-9, abs=1e-9),
            pytest.approx(self.saved_usd, rel=1e-9, abs=1e-9),
        )

    def tuple(self) -> tuple[int, int, int, float, float]:
        return (self.count, self.input_tokens, self.output_tokens, self.cost_usd, self.saved_usd)


def totals_of(records: list[UsageRecord], kind: str = "request") -> Totals:
    rs = [r for r in records if r.kind == kind]
    return Totals(
        len(rs),
        sum(r.input_tokens for r in rs),
        sum(r.output_tokens for r in rs),
        sum(r.cost_usd for r in rs),
        sum(r.saved_usd for r in rs),
    )


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
        (row,) = await self.sql(
            "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(cost_usd), 0), coalesce(sum(saved_usd), 0) FROM ledger_raw "
            f"WHERE kind = '{kind}'"
        )
        return Totals(*(int(v) if i < 3 else float(v) for i, v in enumerate(row)))  # type: ignore[arg-type]

    async def rollup_totals(self, kind: str = "request") -> Totals:
        (row,) = await self.sql(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens), 0), "
            "coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0), "
            f"coalesce(sum(saved_usd), 0) FROM ledger_daily WHERE kind = '{kind}'"
        )
        return Totals(*(int(v) if i < 3 else float(v) for i, v in enumerate(row)))  # type: ignore[arg-type]

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

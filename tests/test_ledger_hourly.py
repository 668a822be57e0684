"""The hourly roll-up (``ledger_hourly``) on both backends: equal to the raw request rows,
exactly once under replays, filtered by team, and backfilled once for an older SQLite ledger."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.test_ledger_helpers import make_records, target_for
from trioproxy.ledger.columns import METRICS
from trioproxy.ledger.hourly import hour_key
from trioproxy.ledger.sqlite import SqliteLedger

BACKENDS = ["sqlite", "postgres"]


def expected(records: list, teams: set[str] | None = None) -> dict:
    acc: dict = defaultdict(lambda: [0] * len(METRICS))
    for r in records:
        if r.kind != "request" or (teams is not None and r.team not in teams):
            continue
        k = hour_key(r)
        a = acc[(k[0], r.team, k[4], r.status)]
        a[0] += 1
        for i, m in enumerate(METRICS[1:], 1):
            a[i] += getattr(r, m)
    return {k: tuple(v) for k, v in acc.items()}


@pytest.mark.parametrize("kind", BACKENDS)
async def test_hourly_rollup_equals_the_raw_request_rows(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    now = time.time()
    records = [
        dataclasses.replace(
            r, key_name=f"key{i % 3}", status=(200, 429, 502)[i % 3], ts=now - (i % 50) * 1800
        )
        for i, r in enumerate(make_records(500, seed=7))
    ]
    try:
        await backend.write_batch(records[:300])
        await backend.write_batch(records[200:])  # a replay overlapping what is stored
        by = ["team", "key", "status"]
        first, end = int(now // 3600) - 48, int(now // 3600) + 1
        rows = await backend.query_hours(by=by, first_hour=first, end_hour=end)
        some = {records[0].team}
        only = await backend.query_hours(by=by, first_hour=first, end_hour=end, teams=sorted(some))
        assert await backend.query_hours(by=by, first_hour=first, end_hour=end, teams=[]) == []
    finally:
        await backend.aclose()
    in_range = [r for r in records if first <= r.ts // 3600 < end]

    def as_dict(rows: list) -> dict:
        return {(r.hour, r.group[0], r.group[1], int(r.group[2])):
                tuple(getattr(r, m) for m in METRICS)
                for r in rows}  # fmt: skip

    for got, want in (
        (as_dict(rows), expected(in_range)),
        (as_dict(only), expected(in_range, some)),
    ):
        assert got == want  # every bucket and µUSD sum exact (integers)


async def test_an_older_sqlite_ledger_is_backfilled_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    records = make_records(200, seed=9)
    backend = await SqliteLedger.open(path)
    await backend.write_batch(records)
    await backend.aclose()
    with sqlite3.connect(path) as conn:  # as a ledger made before the hourly roll-up
        conn.execute("DROP TABLE ledger_hourly")
    backend = await SqliteLedger.open(path)
    backend2 = await SqliteLedger.open(path)  # a second open must not count twice
    try:
        rows = await backend.query_hours(by=["team"], first_hour=0, end_hour=2**40)
    finally:
        await backend.aclose()
        await backend2.aclose()
    assert sum(r.requests for r in rows) == sum(r.kind == "request" for r in records)
    assert sum(r.cost_micros for r in rows) == sum(
        r.cost_micros for r in records if r.kind == "request"
    )

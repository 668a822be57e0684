"""The rollup's ``cache`` dimension: hits by kind per team, and the upgrade of an older rollup."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import time
from pathlib import Path

import pytest

from tests.test_ledger_helpers import make_records, target_for
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.sqlite import SqliteLedger

STATUSES = ("off", "miss", "exact", "semantic", "bypass")


def with_cache(records: list[UsageRecord]) -> list[UsageRecord]:
    return [dataclasses.replace(r, cache=STATUSES[i % 5]) for i, r in enumerate(records)]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_rollup_groups_by_cache_status(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    records = with_cache(make_records(200, seed=7, prefix="cache"))
    try:
        assert await backend.write_batch(records) == 200
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        rows = await backend.query(by=["team", "cache"], since=since)
    finally:
        await backend.aclose()
    expected: dict[tuple[str, str], tuple[int, int]] = {}
    for r in records:
        if r.kind == "request":
            n, saved = expected.get((r.team, r.cache), (0, 0))
            expected[(r.team, r.cache)] = (n + 1, saved + r.saved_micros)
    got = {(row.group[0], row.group[1]): (row.requests, row.saved_micros) for row in rows}
    assert got == expected


async def test_sqlite_rollup_without_cache_column_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(
        """CREATE TABLE ledger_daily (
            day TEXT NOT NULL, kind TEXT NOT NULL, team TEXT NOT NULL, feature TEXT NOT NULL,
            user_name TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL,
            requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, saved_usd REAL NOT NULL,
            PRIMARY KEY (day, kind, team, feature, user_name, route, model))"""
    )
    today = dt.datetime.now(dt.UTC).date().isoformat()
    conn.execute(
        "INSERT INTO ledger_daily VALUES (?, 'request', 'red', 'chat', 'ann', 'default', 'm', "
        "3, 30, 60, 0.5, 0.25)",
        (today,),
    )
    conn.commit()
    conn.close()

    backend = await SqliteLedger.open(path)
    hit = UsageRecord(
        ts=time.time(), request_id="hit-1", kind="request", key_name="k", team="red",
        user="ann", feature="chat", route="default", target="m", cache="exact", saved_micros=100_000,
    )  # fmt: skip
    try:
        assert await backend.write_batch([hit]) == 1
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        rows = await backend.query(by=["team", "cache"], since=since)
    finally:
        await backend.aclose()
    got = {row.group: (row.requests, row.saved_micros) for row in rows}
    assert got == {("red", ""): (3, 250_000), ("red", "exact"): (1, 100_000)}

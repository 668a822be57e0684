"""Ledger backends against a real SQLite file and a real PostgreSQL (the ``pg_url`` fixture)."""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from pathlib import Path

import pytest
import trio

from tests.test_ledger_helpers import make_records, target_for, totals_of
from trioproxy.ledger.backend import METRICS, model_of
from trioproxy.ledger.postgres import PostgresLedger
from trioproxy.ledger.report import spend_report
from trioproxy.ledger.sqlite import SqliteLedger

BACKENDS = ["sqlite", "postgres"]
DAY = 86_400.0


@pytest.mark.parametrize("kind", BACKENDS)
async def test_batches_are_stored_exactly_once(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    records = make_records(600)
    try:
        assert await backend.write_batch(records[:400]) == 400
        # a replay overlapping what is stored, with an in-batch duplicate
        assert await backend.write_batch([*records[300:], records[-1]]) == 200
        assert await backend.write_batch(records) == 0
    finally:
        await backend.aclose()
    assert await target.distinct_keys() == (600, 600)
    for k in ("request", "attempt"):
        expected = totals_of(records, k)
        assert (await target.raw_totals(k)).tuple() == expected.tuple()
        assert (await target.rollup_totals(k)).tuple() == expected.tuple()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_made_up_request_row_is_not_stored_beside_the_requests_own(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A request whose final records' journal append failed (a full disk) is written to the
    database while its intents' lines stay on disk; after a crash, recovery makes up an
    interrupted request row for it (target '', status 0): stored beside the real one, the
    request's cost counted twice. A made-up row whose request has a row is left out; one
    whose request has none is stored (a request the crash cut)."""
    import dataclasses

    from trioproxy.ledger.columns import made_up

    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    real = [r for r in make_records(40) if r.kind == "request"][:2]
    ghost = [
        dataclasses.replace(
            r,
            ts=r.ts + 0.25,
            target=None,
            provider=None,
            provider_model=None,
            status=0,
            outcome="interrupted",
            error_kind="interrupted",
            estimated=True,
        )
        for r in real
    ]
    assert all(made_up(g) for g in ghost) and not any(made_up(r) for r in real)
    try:
        assert await backend.write_batch(real[:1]) == 1
        assert await backend.write_batch(ghost) == 1  # only the one whose request has no row
        rows = await target.sql(
            "SELECT request_id, outcome FROM ledger_raw WHERE kind = 'request' ORDER BY 1"
        )
        assert sorted(rows) == sorted([(real[0].request_id, real[0].outcome),
                                       (real[1].request_id, "interrupted")])  # fmt: skip
        totals = await target.rollup_totals()
        assert totals.count == 2  # the roll-ups count what was stored
    finally:
        await backend.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_report_groups_like_python(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    now = time.time()
    old = make_records(300, seed=2, ts=now - 3 * DAY, prefix="old")
    new = make_records(300, seed=3, ts=now - 5, prefix="new")
    try:
        await backend.write_batch(old + new)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        rows = await spend_report(backend, by=["team", "model"], since=since)
        by_day = await spend_report(backend, by=["day"], since=since - dt.timedelta(days=7))
        attempts = await spend_report(backend, by=["user"], since=since, kind="attempt")
    finally:
        await backend.aclose()

    def group(records: list, dims: tuple[str, ...], kind: str = "request") -> dict:
        acc: dict = defaultdict(lambda: [0] * len(METRICS))
        for r in records:
            if r.kind != kind or r.ts < since.timestamp() - DAY:
                continue
            key = tuple(model_of(r) if d == "model" else getattr(r, d) for d in dims)
            a = acc[key]
            a[0] += 1
            for i, m in enumerate(METRICS[1:], 1):
                a[i] += getattr(r, m)
        return {k: tuple(v) for k, v in acc.items()}

    expected = group(new, ("team", "model"))
    got = {r.group: tuple(getattr(r, m) for m in METRICS) for r in rows}
    assert got == expected  # every bucket and µUSD sum exact (integers)
    assert [r.group for r in rows] == sorted(r.group for r in rows)
    assert {r.group for r in attempts} == set(group(new, ("user",), "attempt"))
    assert sum(r.requests for r in by_day) == totals_of(old + new).count
    assert len(by_day) >= 2  # three days ago and today (a record may cross midnight)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_retention_drops_old_raw_keeps_rollup(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    now = time.time()
    ancient = make_records(50, seed=4, ts=now - 40 * DAY, prefix="a")
    recent = make_records(50, seed=5, ts=now - 10 * DAY, prefix="b")
    try:
        await backend.write_batch(ancient + recent)
        if isinstance(backend, PostgresLedger):
            before = await backend.partitions()
        removed, more = await backend.enforce_retention(now=now, retention_days=30)
        assert not more
        if isinstance(backend, PostgresLedger):
            after = await backend.partitions()
            assert removed >= 1 and len(after) == len(before) - removed
            assert all(
                p >= f"ledger_raw_p{dt.datetime.fromtimestamp(now - 30 * DAY, dt.UTC):%Y%m%d}"
                for p in after
            )
            # a later write on a fresh day still finds (or creates) its partition
            assert await backend.write_batch(make_records(5, seed=6, prefix="c")) == 5
        else:
            assert removed == len(ancient)
    finally:
        await backend.aclose()
    extra = make_records(5, seed=6, prefix="c") if kind == "postgres" else []
    assert (await target.raw_totals()).count == totals_of(recent + extra).count
    rollup = await target.rollup_totals()
    assert rollup.count == totals_of(ancient + recent + extra).count  # old rollups are kept


@pytest.mark.parametrize("kind", BACKENDS)
async def test_without_retention_days_only_the_minute_counters_go(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The default (raw rows kept forever): the hourly pass trims the per-minute counters
    past their KEEP_DAYS and nothing else, on either backend."""
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    now = time.time()
    old = make_records(20, seed=8, ts=now - 20 * DAY, prefix="m")
    try:
        await backend.write_batch(old)
        assert await backend.enforce_retention(now=now, retention_days=None) == (0, False)
    finally:
        await backend.aclose()
    assert (await target.raw_totals()).count == totals_of(old).count
    for table in ("ledger_minutes", "ledger_minutes_teams"):  # every team's, and per team
        minutes_left = await target.sql(
            f"SELECT COUNT(*) FROM {table} WHERE minute < {int((now - 10 * DAY) // 60)}"
        )
        assert minutes_left == [(0,)], table


async def test_sqlite_two_writers_on_one_file(tmp_path: Path) -> None:
    """Two connections (as two gateway processes would) writing concurrently: no lock errors,
    every record once."""
    path = tmp_path / "ledger.sqlite3"
    a, b = await SqliteLedger.open(path), await SqliteLedger.open(path)
    records = make_records(2000, seed=7)
    try:
        async with trio.open_nursery() as nursery:
            for i, backend in enumerate((a, b, a, b)):
                chunk = records[i::4] + records[:100]  # overlapping keys across writers

                async def write(backend: SqliteLedger = backend, chunk: list = chunk) -> None:
                    for j in range(0, len(chunk), 50):
                        await backend.write_batch(chunk[j : j + 50])

                nursery.start_soon(write)
    finally:
        await a.aclose()
        await b.aclose()
    target = target_for("sqlite", None, tmp_path)  # type: ignore[arg-type]
    assert await target.distinct_keys() == (2000, 2000)
    assert (await target.rollup_totals()).tuple() == totals_of(records).tuple()

"""A row the journal's recovery made up gives way to the request's real one, in either order,
on both backends: one request row per request, and every roll-up as if the made-up rows had
never been stored (``trioproxy/ledger/provisional.py``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest
import trio

from tests.test_ledger_helpers import FEATURES, Target, target_for, wait_until
from trioproxy.ledger.backend import LedgerBackend
from trioproxy.ledger.columns import made_up
from trioproxy.ledger.journal import _line, resolve_lines
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.report import spend_report
from trioproxy.ledger.spend import LedgerSpend
from trioproxy.ledger.spool import SPOOL_NAME, Spool
from trioproxy.ledger.writer import LedgerWriter

BACKENDS = ["sqlite", "postgres"]
ROLLUPS = ("ledger_daily", "ledger_hourly", "ledger_days", "ledger_minutes",
           "ledger_minutes_teams")  # fmt: skip
TABLES = ("ledger_raw", *ROLLUPS)


def a_request(rid: str, t0: float, *, served: bool) -> tuple[list[UsageRecord], list[UsageRecord]]:
    """(its real final records, what recovery makes up from its intents): two attempts, the
    first failed; the second won (``served``) or failed too (the request row has no target,
    the made-up row's key in SQLite)."""
    common = dict(request_id=rid, key_name="k", team="red", user="ann", feature=FEATURES[0],
                  route="default", provider="p", provider_model="prov-model", stream=True)  # fmt: skip
    a0 = UsageRecord(ts=t0 + 0.01, kind="attempt", target="m0", attempt=0, status=503,
                     outcome="failed", error_kind="upstream_error", latency_ms=40.0,
                     **common)  # type: ignore[arg-type]  # fmt: skip
    a1 = UsageRecord(ts=t0 + 0.05, kind="attempt", target="m1", attempt=1, fallback_depth=1,
                     input_tokens=900, output_tokens=1200, cost_micros=61_000,
                     latency_ms=2_400.0, ttfb_ms=310.0,
                     status=200 if served else 502, outcome="won" if served else "failed",
                     **common)  # type: ignore[arg-type]  # fmt: skip
    request = UsageRecord(ts=t0, kind="request", target="m1" if served else None,
                          input_tokens=900 if served else 0, output_tokens=1200 if served else 0,
                          cost_micros=61_000, latency_ms=2_500.0,
                          status=200 if served else 502, outcome="served" if served else "error",
                          **common)  # type: ignore[arg-type]  # fmt: skip
    lost = dict(outcome="interrupted", status=0, error_kind="interrupted", estimated=True,
                latency_ms=0.0, ttfb_ms=None, input_tokens=800)  # fmt: skip
    intents = [
        dataclasses.replace(a, **lost, output_tokens=n, cost_micros=cost)
        for a, n, cost in ((a0, 0, 8_000), (a1, 700, 35_000))
    ]
    ghost = resolve_lines([_line(i, intent=True) for i in intents])
    assert [made_up(g) for g in ghost] == [False, False, True]
    return [a0, a1, request], ghost


def _plain(v: object) -> object:
    return v.isoformat() if isinstance(v, dt.date) else v


async def contents(target: Target) -> dict[str, list[tuple[object, ...]]]:
    """Every roll-up's rows, and the raw rows' keys, outcomes and costs, sorted."""
    out = {}
    for table in ROLLUPS:
        rows = await target.sql(f"SELECT * FROM {table}")
        out[table] = sorted(tuple(_plain(v) for v in row) for row in rows)
    rows = await target.sql("SELECT request_id, kind, attempt, target, outcome, cost_micros, "
                            "input_tokens, output_tokens FROM ledger_raw")  # fmt: skip
    out["ledger_raw"] = sorted(rows)
    return out


def _execute(target: Target, sql: str) -> None:
    """A change made beside the backend under test (committed)."""
    if target.kind == "sqlite":
        conn = sqlite3.connect(target.where, isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
    else:
        with psycopg.connect(target.where, autocommit=True) as pg:
            pg.execute(sql)


async def execute(target: Target, sql: str) -> None:
    await trio.to_thread.run_sync(_execute, target, sql)


async def only(target: Target, backend: LedgerBackend, records: list[UsageRecord]) -> dict:
    """The contents of the same ledger holding ``records`` alone."""
    for table in TABLES:
        await execute(target, f"DELETE FROM {table}")
    assert await backend.write_batch(records) == len(records)
    return await contents(target)


ORDERS = ["made_up_first", "real_first", "one_batch_made_up_first", "one_batch_real_first"]


@pytest.mark.parametrize("served", [True, False], ids=["served", "failed"])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kind", BACKENDS)
async def test_the_real_rows_stand_alone_whatever_came_first(
    kind: str, order: str, served: bool, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A request whose final records' journal append failed (a full disk) reached the
    database or the spool; its intents' lines stayed, and after a crash recovery made up an
    interrupted request row and interrupted attempt rows from them. Whichever reaches the
    ledger first, and in one batch either way, the ledger ends holding the real rows alone,
    every roll-up as if the made-up rows had never been there (a made-up row first stood
    beside the real request row: its cost counted twice; the intents' attempt rows kept the
    real ones out)."""
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    t0 = time.time() - 120
    real, ghost = a_request("r-1", t0, served=served)
    _, other_ghost = a_request("r-2", t0 + 1, served=True)
    try:
        if order == "made_up_first":
            await backend.write_batch([*ghost, *other_ghost])
            assert await backend.write_batch(real) == 3
        elif order == "real_first":
            await backend.write_batch(real)
            assert await backend.write_batch([*ghost, *other_ghost]) == 3  # r-2's alone
        elif order == "one_batch_made_up_first":
            assert await backend.write_batch([*ghost, *other_ghost, *real]) == 6
        else:
            assert await backend.write_batch([*real, *ghost, *other_ghost]) == 6
        # the made-up rows of a request whose real ones never came stand (r-2)
        got = await contents(target)
        spend = LedgerSpend(backend)
        hours = await spend.hours(int(t0 // 3600) - 1, int(t0 // 3600) + 2, by="team")
        requests = await spend.requests([(t0 - 60, t0 + 60)])
        want = await only(target, backend, [*real, *other_ghost])
    finally:
        await backend.aclose()
    assert got == want
    assert [r[:5] for r in got["ledger_raw"] if r[0] == "r-1"] == sorted(
        (r.request_id, r.kind, r.attempt, r.target or "", r.outcome) for r in real
    )
    # a budget rebuild reads the real request's cost once
    assert sum(h.cost_micros for h in hours) == 61_000 + other_ghost[-1].cost_micros
    assert sorted((r.request_id, r.cost_micros) for r in requests) == [
        ("r-1", 61_000),
        ("r-2", other_ghost[-1].cost_micros),
    ]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_ledger_holding_both_rows_is_healed_when_the_real_ones_are_replayed(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger the old code left with both request rows, opened by this version (which makes
    the SQLite index, or lists PostgreSQL's provisional rows, from the rows stored): a replay
    of the real records removes the made-up rows and their roll-ups."""
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    t0 = time.time() - 120
    real, ghost = a_request("r-1", t0, served=True)
    try:
        await backend.write_batch(ghost)
        with monkeypatch.context() as old_code:  # it did not look for made-up rows
            old_code.setattr(type(backend), "_give_way", lambda *args: None, raising=False)
            await backend.write_batch(real)
    finally:
        await backend.aclose()
    assert len(await target.sql("SELECT 1 FROM ledger_raw WHERE kind = 'request'")) == 2
    made_before = ("DROP TABLE IF EXISTS ledger_provisional" if kind == "postgres"
                   else "DROP INDEX IF EXISTS ledger_raw_interrupted")  # fmt: skip
    await execute(target, made_before)
    backend = await target.open()
    try:
        # PostgreSQL lists the made-up rows of the last days in its retention rounds, a day
        # at a time (the writer's first comes at start)
        while (await backend.enforce_retention(now=time.time(), retention_days=None))[1]:
            pass
        # replayed: the request row is stored; its attempts are new (the intents' rows had
        # kept them out)
        assert await backend.write_batch(real) == 2
        got = await contents(target)
        want = await only(target, backend, real)
    finally:
        await backend.aclose()
    assert got == want


FAST = dict(batch_size=64, batch_interval=0.01, write_timeout=5.0, retry_min=0.05, retry_max=0.5)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_spooled_final_replayed_after_the_recovered_rows_replaces_them(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The writer replays claimed spool files in name order: the recovered (made-up) rows in
    one, the request's real records, spooled by the dead process while the database was down,
    in one read after it. The real rows stand alone."""
    target = target_for(kind, request, tmp_path)
    t0 = time.time() - 120
    real, ghost = a_request("r-1", t0, served=True)
    Spool(tmp_path, name=f"{SPOOL_NAME}.replay-1-0").append(ghost)
    Spool(tmp_path, name=f"{SPOOL_NAME}.replay-2-0").append(real)
    writer = LedgerWriter(await target.open(), Spool(tmp_path), **FAST)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await wait_until(lambda: not writer.spool.has_pending())
        await writer.aclose()
    assert writer.statistics().replayed == 6
    got = await contents(target)
    try:
        want = await only(target, writer.backend, real)
    finally:
        await writer.backend.aclose()
    assert got == want


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_made_up_request_row_carries_its_attempts_tokens(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The made-up request row carries the sum of its attempts' tokens, as it carries their
    cost: the spend report and a budget rebuild's token windows (request rows) count them
    (they read 0 tokens beside the attempts' cost). The real rows, when they come, replace it
    in every roll-up: their tokens alone are counted."""
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    t0 = time.time() - 120
    real, ghost = a_request("r-1", t0, served=True)
    attempts = [g for g in ghost if g.kind == "attempt"]
    made = ghost[-1]
    assert (made.input_tokens, made.output_tokens) == (800 + 800, 0 + 700)
    assert made.cost_micros == sum(a.cost_micros for a in attempts)
    since = dt.datetime.fromtimestamp(t0 - 86_400, dt.UTC)
    hour = int(t0 // 3600)
    try:
        await backend.write_batch(ghost)
        spend = LedgerSpend(backend)
        [row] = await spend_report(backend, by=["team"], since=since)
        assert (row.input_tokens, row.output_tokens, row.cost_micros) == (1_600, 700, 43_000)
        [raw] = await spend.requests([(t0 - 60, t0 + 60)])
        assert (raw.request_id, raw.tokens, raw.cost_micros) == ("r-1", 2_300, 43_000)
        [users] = await spend.hours(hour - 1, hour + 2, by="user")
        assert (users.name, users.tokens) == ("ann", 2_300)
        assert await backend.write_batch(real) == 3  # the real rows come later
        [row] = await spend_report(backend, by=["team"], since=since)
        assert (row.input_tokens, row.output_tokens, row.cost_micros) == (900, 1_200, 61_000)
        [raw] = await spend.requests([(t0 - 60, t0 + 60)])
        assert (raw.tokens, raw.cost_micros) == (2_100, 61_000)
        [users] = await spend.hours(hour - 1, hour + 2, by="user")
        assert users.tokens == 2_100
    finally:
        await backend.aclose()

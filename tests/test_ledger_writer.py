"""LedgerWriter: batches, spool on failure, replay, shutdown flush; real SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.test_ledger_helpers import Target, make_records, target_for, totals_of, wait_until
from trioproxy.ledger import sqlite as sqlite_ledger
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spool import Spool
from trioproxy.ledger.spooler import Spooler
from trioproxy.ledger.writer import LedgerWriter

FAST: dict[str, Any] = dict(
    batch_size=64,
    batch_interval=0.01,
    write_timeout=2.0,
    retry_min=0.05,
    retry_max=0.5,
    shutdown_timeout=5.0,
    shutdown_db_timeout=1.0,
)


async def assert_exactly(target: Target, records: list[UsageRecord]) -> None:
    assert await target.distinct_keys() == (len(records), len(records))
    for kind in ("request", "attempt"):
        expected = totals_of(records, kind).tuple()
        assert (await target.raw_totals(kind)).tuple() == pytest.approx(expected)
        assert (await target.rollup_totals(kind)).tuple() == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_records_arrive_exactly_once_in_batches(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    writer = LedgerWriter(await target.open(), tmp_path / "spool", **FAST)
    records = make_records(1500)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i, r in enumerate(records):
            writer.submit(r)
            if i % 100 == 0:
                await trio.lowlevel.checkpoint()
        for r in records[:200]:  # the gateway never does this, but a resubmit must not count
            writer.submit(r)
        await wait_until(lambda: writer.statistics().written == 1500)
        await writer.aclose()
    await writer.backend.aclose()
    stats = writer.statistics()
    assert (stats.written, stats.duplicates, stats.spooled, stats.overflowed) == (1500, 200, 0, 0)
    await assert_exactly(target, records)


async def test_full_channel_spills_to_spool_then_replays(tmp_path: Path) -> None:
    target = target_for("sqlite", None, tmp_path)  # type: ignore[arg-type]
    writer = LedgerWriter(await target.open(), tmp_path / "spool", capacity=10, **FAST)
    records = make_records(100)
    for r in records:  # run() not started yet: the channel fills after 10
        writer.submit(r)
    assert writer.statistics().overflowed == 90
    assert writer.spool.count() == 90
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)  # replays the spool before reporting started
        assert writer.statistics().replayed == 90
        await wait_until(lambda: writer.statistics().written == 100)
        await writer.aclose()
    await writer.backend.aclose()
    assert writer.spool.count() == 0
    await assert_exactly(target, records)


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_shutdown_flushes_pending_to_db(how: str, tmp_path: Path) -> None:
    target = target_for("sqlite", None, tmp_path)  # type: ignore[arg-type]
    slow = {**FAST, "batch_size": 10_000, "batch_interval": 60.0}
    writer = LedgerWriter(await target.open(), tmp_path / "spool", **slow)
    records = make_records(300)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for r in records:
            writer.submit(r)
        await trio.sleep(0.05)
        assert writer.statistics().written == 0  # still batching
        if how == "aclose":
            await writer.aclose()
        else:
            nursery.cancel_scope.cancel()
    writer.submit(make_records(1, seed=9)[0])  # after shutdown: straight to the spool
    await writer.backend.aclose()
    assert writer.statistics().written == 300
    assert writer.spool.count() == 1
    await assert_exactly(target, records)


async def test_postgres_down_mid_run_then_back(pg_server: Any, pg_url: str, tmp_path: Path) -> None:
    target = Target("postgres", pg_url)
    writer = LedgerWriter(await target.open(), tmp_path / "spool", **FAST)
    records = make_records(900, seed=11)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for r in records[:300]:
            writer.submit(r)
        await wait_until(lambda: writer.statistics().written == 300)
        await trio.to_thread.run_sync(pg_server.stop)
        for i, r in enumerate(records[300:600]):
            writer.submit(r)
            if i % 50 == 0:
                await trio.sleep(0.05)
        await wait_until(lambda: writer.statistics().spooled >= 300)
        assert not writer.statistics().db_up
        await trio.to_thread.run_sync(pg_server.start)
        for r in records[600:]:
            writer.submit(r)
        await wait_until(lambda: writer.statistics().written == 900, limit=30)
        await writer.aclose()
    await writer.backend.aclose()
    stats = writer.statistics()
    assert stats.db_up and stats.lost == 0 and stats.replayed >= 300
    assert writer.spool.count() == 0
    await assert_exactly(target, records)


async def test_shutdown_while_db_down_spools_then_next_run_replays(
    pg_server: Any, pg_url: str, tmp_path: Path
) -> None:
    target = Target("postgres", pg_url)
    records = make_records(400, seed=12)
    first = LedgerWriter(await target.open(), tmp_path / "spool", **FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        for r in records[:100]:
            first.submit(r)
        await wait_until(lambda: first.statistics().written == 100)
        await trio.to_thread.run_sync(pg_server.stop)
        for r in records[100:]:
            first.submit(r)
        with trio.fail_after(FAST["shutdown_timeout"] + 1):  # shutdown is bounded
            await first.aclose()
    await first.backend.aclose()
    assert first.spool.count() == 300

    await trio.to_thread.run_sync(pg_server.start)
    second = LedgerWriter(await target.open(), tmp_path / "spool", **FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        await wait_until(lambda: second.statistics().replayed == 300)
        await second.aclose()
    await second.backend.aclose()
    assert second.spool.count() == 0
    await assert_exactly(target, records)


async def test_replay_after_partial_write_does_not_double_count(tmp_path: Path) -> None:
    """A batch that reached the database *and* the spool (write timed out on our side but
    committed) is replayed without double-counting, raw or rollup."""
    target = target_for("sqlite", None, tmp_path)  # type: ignore[arg-type]
    backend = await target.open()
    records = make_records(200, seed=13)
    await backend.write_batch(records[:150])
    spool = Spool(tmp_path / "spool")
    spool.append(records, fsync=True)
    writer = LedgerWriter(backend, spool, **FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.aclose()
    await backend.aclose()
    stats = writer.statistics()
    assert (stats.written, stats.duplicates, stats.replayed) == (50, 150, 200)
    await assert_exactly(target, records)


async def test_torn_spool_line_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    records = make_records(3, seed=14)
    spool.append(records[:2])
    with spool.path.open("a") as f:
        f.write('{"ts": 1.0, "request_id": "tor')  # a crash mid-write
    (path,) = spool.claim()
    assert [r.request_id for r in spool.read(path)] == [r.request_id for r in records[:2]]
    assert spool.corrupt_lines == 1
    assert not spool.path.exists()
    spool.append(records[2:])  # a new spool file after the claim
    assert spool.count() == 2 + 1


async def test_retention_removes_a_backlog_in_batches_between_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A day's raw rows go in bounded batches, one per pass of the writer's loop: records
    waiting are written between them (not after the whole round), logged once at its end."""
    monkeypatch.setattr(sqlite_ledger, "RETENTION_BATCH", 10)
    target = target_for("sqlite", None, tmp_path)  # type: ignore[arg-type]
    backend = await target.open()
    now = time.time()
    ancient = make_records(45, seed=4, ts=now - 40 * 86400, prefix="a")
    await backend.write_batch(ancient)
    calls: list[tuple[int, bool]] = []
    events: list[str] = []
    remove, write = backend.enforce_retention, backend.write_batch

    async def counted(**kwargs: Any) -> tuple[int, bool]:
        calls.append(await remove(**kwargs))
        events.append("retention")
        return calls[-1]

    async def written(records: Any) -> int:
        events.append("write")
        return await write(records)

    monkeypatch.setattr(backend, "enforce_retention", counted)
    monkeypatch.setattr(backend, "write_batch", written)
    writer = LedgerWriter(backend, tmp_path / "spool", retention_days=30, **FAST)
    fresh = make_records(20, seed=5, prefix="b")
    for r in fresh:  # waiting when the round starts
        writer.submit(r)
    caplog.set_level(logging.INFO, logger="trioproxy.ledger")
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await wait_until(
            lambda: writer.statistics().written == 20 and bool(calls) and not calls[-1][1]
        )
        await writer.aclose()
    await backend.aclose()
    assert calls == [(10, True)] * 4 + [(5, False)]
    assert events[:3] == ["retention", "write", "retention"], events  # not after the round
    assert [r for (r,) in await target.sql("SELECT request_id FROM ledger_raw WHERE request_id "
                                          "LIKE 'a%'")] == []  # fmt: skip
    assert (await target.raw_totals()).count == totals_of(fresh).count
    removed = [r.getMessage() for r in caplog.records if "retention" in r.getMessage()]
    assert removed == ["ledger retention removed 45 raw partitions/rows"]


async def test_minute_counters_are_trimmed_when_raw_rows_are_kept_forever(
    tmp_path: Path,
) -> None:
    """Without ``retention_days`` the raw rows stay, but the Providers page's per-minute
    counters keep their KEEP_DAYS (they grew forever before)."""
    target = target_for("sqlite", None, tmp_path)  # type: ignore[arg-type]
    backend = await target.open()
    old = make_records(30, seed=4, ts=time.time() - 20 * 86400, prefix="a")
    await backend.write_batch(old)
    tables = ("ledger_minutes", "ledger_minutes_teams")  # every team's, and per team
    for table in tables:
        assert (await target.sql(f"SELECT COUNT(*) FROM {table}"))[0][0] > 0
    writer = LedgerWriter(backend, tmp_path / "spool", retention_days=None, **FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)  # its first maintenance pass runs before started
        await writer.aclose()
    await backend.aclose()
    for table in tables:
        assert (await target.sql(f"SELECT COUNT(*) FROM {table}"))[0][0] == 0
    assert (await target.sql("SELECT COUNT(*) FROM ledger_raw"))[0][0] == len(old)


async def test_a_record_spooled_during_a_replay_is_replayed_at_the_next_turn(
    tmp_path: Path,
) -> None:
    """A request's record overflows to the spool while a replay writes the spool's earlier
    records: the replay ends with the spool still marked as holding records (it cleared the
    mark at its end, and the new record waited for the minute's spool check)."""
    spooler = Spooler(Spool(tmp_path), None)
    first, late = make_records(3, prefix="first"), make_records(1, prefix="late")
    spooler.spool_now(list(enumerate(first)))
    written: list[UsageRecord] = []

    class Link:
        async def write(self, batch: list[UsageRecord], bound: float) -> bool:
            await trio.lowlevel.checkpoint()
            spooler.overflow(99, late[0])  # on the request path, while the write is out
            written.extend(batch)
            return True

    await spooler.replay(Link(), batch_size=10, bound=5)  # type: ignore[arg-type]
    assert written == first and spooler.dirty
    await spooler.replay(Link(), batch_size=10, bound=5)  # type: ignore[arg-type]
    assert written[3:] == late

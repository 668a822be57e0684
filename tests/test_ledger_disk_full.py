"""The ledger through a state disk that refuses writes (full: ENOSPC; read-only: EROFS).

A review filled the state disk for 25 s under load: every request of those seconds was served
and none recorded (the spool append failed and the writer dropped the batch), the writer
crashed on its shutdown flush (ENOSPC again), and the journal kept every segment after that
until a restart. The disk is refused here at the file-write seam of the journal and the spool
(their module's ``os``) and at the SQLite writer (``write_batch``), no mount needed.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.fixtures_gateway import DEMO_KEY, start_gateway, start_simulator
from tests.test_ledger_helpers import make_records, target_for, wait_until
from tests.test_ledger_writer import FAST, assert_exactly
from trioproxy.config import demo_settings
from trioproxy.config.model import StorageConfig
from trioproxy.ledger import journal as journal_mod
from trioproxy.ledger import spool as spool_mod
from trioproxy.ledger.journal import JOURNAL_DIR, Journal
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.service import LedgerService
from trioproxy.ledger.sinks import ListSink
from trioproxy.ledger.spool import Spool
from trioproxy.ledger.spooler import HOLD_HEADROOM
from trioproxy.ledger.writer import LedgerWriter

ERRNOS = [errno.ENOSPC, errno.EROFS]
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT


class RefusingDisk:
    """``os`` as journal.py and spool.py see it: while ``refusing``, every write fails with
    ``err`` (EROFS: every open for writing, rename and truncate too); else the real one."""

    def __init__(self, err: int) -> None:
        self.err = err
        self.refusing = False
        self.refused = 0
        self.fsync_too = False
        """fsync fails too (a full disk's delayed allocation)."""

    def fsync(self, fd: int) -> None:
        if self.refusing and self.fsync_too:
            self._refuse()
        os.fsync(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _refuse(self, path: object = None) -> None:
        self.refused += 1
        raise OSError(self.err, os.strerror(self.err), path)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.refusing:
            self._refuse()
        return os.write(fd, data)

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        if self.refusing and self.err == errno.EROFS and flags & _WRITING:
            self._refuse(path)
        return os.open(path, flags, mode)

    def rename(self, src: Any, dst: Any) -> None:
        if self.refusing and self.err == errno.EROFS:
            self._refuse(src)
        os.rename(src, dst)

    def ftruncate(self, fd: int, size: int) -> None:
        if self.refusing and self.err == errno.EROFS:
            self._refuse()
        os.ftruncate(fd, size)


def refuse_disk(monkeypatch: pytest.MonkeyPatch, err: int, writer: LedgerWriter) -> RefusingDisk:
    disk = RefusingDisk(err)
    monkeypatch.setattr(journal_mod, "os", disk)
    monkeypatch.setattr(spool_mod, "os", disk)
    write_batch = writer.backend.write_batch

    async def full_database(records: Sequence[UsageRecord]) -> int:
        if disk.refusing:  # what SQLite says on a full (or read-only) disk
            raise sqlite3.OperationalError("database or disk is full")
        return await write_batch(records)

    monkeypatch.setattr(writer.backend, "write_batch", full_database)
    return disk


async def _writer(tmp_path: Path, journal: Journal, **kw: Any) -> LedgerWriter:
    target = target_for("sqlite", None, tmp_path)  # type: ignore[arg-type]
    return LedgerWriter(
        await target.open(), Spool(tmp_path), journal=journal,
        **{**FAST, "fsync_interval": 0.01, **kw},
    )  # fmt: skip


async def next_start_writes_exactly(tmp_path: Path, records: list[UsageRecord]) -> None:
    """The next start (a new writer on the same journal) writes ``records`` exactly once."""
    second = await _writer(tmp_path, Journal(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        await wait_until(lambda: second.statistics().written == len(records))
        await second.aclose()
    await second.backend.aclose()
    await assert_exactly(target_for("sqlite", None, tmp_path), records)  # type: ignore[arg-type]


@pytest.mark.parametrize("err", ERRNOS, ids=errno.errorcode.get)
async def test_records_the_disk_refused_land_once_it_takes_writes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, err: int
) -> None:
    """Records journaled just before the disk filled, and records submitted while it refuses
    every write (journal, spool, database; a full channel's overflow too), are held in
    memory, and all reach the database exactly once when the disk takes writes again, with
    no restart; the writer runs through it; the journal shrinks back to one empty segment."""
    journal = Journal(tmp_path)
    writer = await _writer(tmp_path, journal, capacity=50)
    disk = refuse_disk(monkeypatch, err, writer)
    caplog.set_level(logging.WARNING, "trioproxy.ledger")
    before, during = make_records(120, seed=21), make_records(300, seed=22, prefix="d")
    ended = trio.Event()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await writer.run(task_status=task_status)
        finally:
            ended.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        for r in before:  # journaled; the disk fills before the writer takes them
            writer.submit(r)
        disk.refusing = True
        for r in during:  # not journaled; beyond the channel's 50: overflow, refused too
            writer.submit(r)
        total = len(before) + len(during)
        spilled = writer.statistics().overflowed  # spooled before the disk filled
        assert spilled >= len(before) - 51
        await wait_until(lambda: writer.statistics().held == total - spilled)
        # the spilled ones' entries go once the spool is fsync'd; the held ones' stay
        await wait_until(lambda: journal.statistics().outstanding == len(before) - spilled)
        assert not ended.is_set()  # the writer runs through the episode
        held_lines = [m for m in caplog.messages if "held in memory" in m]
        assert held_lines and errno.errorcode[err] in held_lines[0]
        assert str(tmp_path) in held_lines[0]  # names the path

        disk.refusing = False
        await wait_until(lambda: writer.statistics().written == total)
        await wait_until(lambda: journal.statistics().outstanding == 0)
        await wait_until(lambda: journal.statistics().segments == 1)  # the finished ones go
        await wait_until(lambda: journal.statistics().bytes == 0)
        assert len(list((tmp_path / JOURNAL_DIR).iterdir())) == 1
        assert not ended.is_set()
        await writer.aclose()
    await writer.backend.aclose()
    stats = writer.statistics()
    assert (stats.lost, stats.held, stats.held_total) == (0, 0, total - spilled)
    assert writer.spool.count() == 0
    await assert_exactly(target_for("sqlite", None, tmp_path), before + during)  # type: ignore[arg-type]


@pytest.mark.parametrize("err", ERRNOS, ids=errno.errorcode.get)
async def test_a_shutdown_while_the_disk_refuses_ends_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    """The shutdown flush met the full disk again and the writer ended in an ENOSPC
    traceback, before it spooled the rest or left its journal. It ends cleanly now: what it
    could not write is counted lost, and the journaled part of it is in the journal the next
    start recovers, exactly once."""
    journal = Journal(tmp_path)
    writer = await _writer(tmp_path, journal)
    disk = refuse_disk(monkeypatch, err, writer)
    records = make_records(90, seed=23)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for r in records:
            writer.submit(r)
        disk.refusing = True
        await wait_until(lambda: writer.statistics().held == len(records))
        with trio.fail_after(FAST["shutdown_timeout"] + 2):
            await writer.aclose()
    assert writer.statistics().lost == len(records)
    disk.refusing = False
    await writer.backend.aclose()

    await next_start_writes_exactly(tmp_path, records)


async def test_past_the_hold_bound_a_record_is_counted_and_logged_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path)
    writer = await _writer(tmp_path, journal, capacity=10)
    disk = refuse_disk(monkeypatch, errno.ENOSPC, writer)
    writer.disk.hold_capacity = 25
    disk.refusing = True
    caplog.set_level(logging.ERROR, "trioproxy.ledger")
    for r in make_records(40, seed=24):  # run() not started: 10 queued, 30 overflow
        writer.submit(r)
    stats = writer.statistics()
    assert (stats.held, stats.lost) == (25, 5)
    assert any("records lost" in m and "HOLD_CAPACITY" in m for m in caplog.messages)
    disk.refusing = False
    await writer.aclose()
    await writer.backend.aclose()
    journal.close()


def test_a_spool_write_the_full_disk_cut_short_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half a batch written, then ENOSPC: the torn line glued the next append's first record
    to it and replay skipped both. It is cut off again (or, if that fails, ended)."""
    spool = Spool(tmp_path)
    first, second = make_records(2, seed=25), make_records(1, seed=26)
    spool.append(first[:1])
    calls = {"n": 0}

    class HalfThenFull(RefusingDisk):
        def write(self, fd: int, data: bytes | memoryview) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                return os.write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def ftruncate(self, fd: int, size: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")  # even that fails

    monkeypatch.setattr(spool_mod, "os", HalfThenFull(errno.ENOSPC))
    with pytest.raises(OSError):
        spool.append(first[1:])
    monkeypatch.undo()
    spool.append(second)
    (claimed,) = spool.claim()
    assert list(spool.read(claimed)) == first[:1] + second
    assert spool.corrupt_lines == 1


async def test_the_ledger_cannot_record_once_its_hold_is_nearly_full(tmp_path: Path) -> None:
    """Near the bound (HOLD_HEADROOM left for the requests in flight) the ledger says it
    cannot record; once records drain below it, it can again."""
    ledger = LedgerService(StorageConfig(state_dir=str(tmp_path)))
    assert not ledger.cannot_record()  # no writer yet
    writer = await _writer(tmp_path, Journal(tmp_path))
    ledger.writer = writer
    writer.disk.hold_capacity = HOLD_HEADROOM + 10
    entries = [(-1, r) for r in make_records(11, seed=27)]
    writer.disk.hold(entries[:10], None, new=10)
    assert not ledger.cannot_record()
    writer.disk.hold(entries[10:], None, new=1)
    assert ledger.cannot_record()
    del writer.disk.held[:1]  # one written
    assert not ledger.cannot_record()
    await writer.aclose()
    await writer.backend.aclose()


class UnrecordingSink(ListSink):
    """A ledger whose hold is nearly full while ``full``."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def cannot_record(self) -> bool:
        return self.full


async def test_requests_get_a_503_in_their_dialect_while_the_ledger_cannot_record(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A demanding operator wants no unrecorded service: while the ledger's hold is nearly
    full, new requests get a 503 (OpenAI's or Anthropic's envelope) and /readyz says why;
    once records drain, they are served again."""
    sim = await start_simulator(nursery)
    sink = UnrecordingSink()
    g = await start_gateway(nursery, demo_settings(sim.url, DEMO_KEY, state_dir=str(tmp_path)),
                            sink=sink)  # fmt: skip
    headers = {"authorization": f"Bearer {DEMO_KEY}", "x-api-key": DEMO_KEY}
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    async with httpx.AsyncClient(timeout=30) as c:

        async def both() -> tuple[httpx.Response, httpx.Response]:
            openai = await c.post(g.url + "/v1/chat/completions", json=body, headers=headers)
            anthropic = await c.post(g.url + "/v1/messages", json=body, headers=headers)
            return openai, anthropic

        assert [r.status_code for r in await both()] == [200, 200]
        served = len(sink.records)
        sink.full = True
        openai, anthropic = await both()
        assert openai.status_code == anthropic.status_code == 503
        assert "ledger cannot record" in openai.json()["error"]["message"]
        assert anthropic.json()["type"] == "error"
        assert anthropic.json()["error"]["type"] == "overloaded_error"
        assert "ledger cannot record" in anthropic.json()["error"]["message"]
        assert openai.headers["retry-after"] == anthropic.headers["retry-after"] == "5"
        ready = await c.get(g.url + "/readyz")
        assert ready.status_code == 503
        assert any("ledger cannot record" in f for f in ready.json()["faults"])
        assert len(sink.records) == served  # nothing served, nothing to record
        sink.full = False
        assert [r.status_code for r in await both()] == [200, 200]
        assert (await c.get(g.url + "/readyz")).status_code == 200


class RefusedSink(ListSink):
    """A ledger whose state disk refused writes just now; ``lost``: past the hold too."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    def losing_records(self) -> bool:
        return True

    def lost_records(self) -> bool:
        return self.lost


async def test_readyz_says_records_are_held_not_lost_while_the_hold_takes_them(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """/readyz said "records lost" whenever a journal append failed; they are held now."""
    sim = await start_simulator(nursery)
    sink = RefusedSink()
    g = await start_gateway(nursery, demo_settings(sim.url, DEMO_KEY, state_dir=str(tmp_path)),
                            sink=sink)  # fmt: skip
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(g.url + "/readyz")
        assert r.status_code == 503
        (fault,) = [f for f in r.json()["faults"] if f.startswith("ledger")]
        assert "held in memory" in fault and "lost" not in fault
        sink.lost = True
        (fault,) = [f for f in (await c.get(g.url + "/readyz")).json()["faults"]
                    if f.startswith("ledger")]  # fmt: skip
        assert "records lost" in fault


async def test_a_journal_close_the_disk_refuses_at_shutdown_is_a_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's own journal is closed (fsync'd) at its end: a disk that refuses that
    fsync ended the writer with a traceback, before it was done; a log line now, and the
    journaled records are recovered by the next start."""
    journal = Journal(tmp_path)
    writer = await _writer(tmp_path, journal, fsync_interval=3600.0)  # unsynced at close
    disk = refuse_disk(monkeypatch, errno.ENOSPC, writer)
    disk.fsync_too = True
    records = make_records(30, seed=28)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for r in records:
            writer.submit(r)
        disk.refusing = True
        await wait_until(lambda: writer.statistics().held == len(records))
        with trio.fail_after(FAST["shutdown_timeout"] + 2):
            await writer.aclose()
    assert any("journal close failed" in m for m in caplog.messages)
    disk.refusing = False
    await writer.backend.aclose()
    await next_start_writes_exactly(tmp_path, records)

"""The ledger journal: records survive the death of the process and are counted exactly once."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import trio

from tests.test_ledger_helpers import make_records, target_for, totals_of, wait_until
from trioproxy.ledger.columns import to_dict
from trioproxy.ledger.journal import JOURNAL_DIR, Journal, resolve_lines
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spool import Spool
from trioproxy.ledger.writer import LedgerWriter

FAST = dict(batch_size=64, batch_interval=0.01, write_timeout=2.0, retry_min=0.05, retry_max=0.5)


def _attempt(rid: str, index: int, *, cost: int, outcome: str = "interrupted") -> UsageRecord:
    return UsageRecord(
        ts=1000.0 + index, request_id=rid, kind="attempt", key_name="k", team="t", user="u",
        feature="f", route="r", target=f"m{index}", attempt=index, cost_micros=cost,
        outcome=outcome,  # type: ignore[arg-type]
    )  # fmt: skip


def _lines(*entries: tuple[UsageRecord, bool]) -> list[bytes]:
    from trioproxy.ledger.journal import _line

    return [_line(r, intent=intent) for r, intent in entries]


def test_final_records_win_over_intents() -> None:
    a0 = _attempt("r1", 0, cost=10_000)
    final_a0 = dataclasses.replace(a0, outcome="won", cost_micros=50_000, status=200)
    request = dataclasses.replace(final_a0, kind="request", outcome="served")
    out = resolve_lines(_lines((a0, True), (final_a0, False), (request, False)))
    assert out == [final_a0, request]


def test_an_orphan_intent_becomes_an_interrupted_request() -> None:
    a0, a1 = _attempt("r2", 0, cost=10_000), _attempt("r2", 1, cost=20_000)
    failed_a0 = dataclasses.replace(a0, outcome="failed", cost_micros=0, status=503)
    out = resolve_lines([*_lines((a0, True), (a1, True), (failed_a0, False)), b'{"torn'])
    assert [(r.kind, r.attempt, r.outcome) for r in out] == [
        ("attempt", 0, "failed"),
        ("attempt", 1, "interrupted"),
        ("request", 0, "interrupted"),
    ]
    request = out[-1]
    assert request.cost_micros == 20_000 and request.status == 0 and request.target is None
    assert request.error_kind == "interrupted" and request.ts == a0.ts


def test_a_made_up_request_record_sums_its_attempts_tokens_as_their_cost() -> None:
    """Each token count of the made-up request record is its attempts' sum (final records
    and orphan intents alike), as its cost is: it carried no input or output tokens (5/116
    in its attempts, 0/0 beside their cost on the request), and the first attempt's cache
    counts alone."""
    counts = dict(input_tokens=5, output_tokens=116, cache_read_tokens=7,
                  cache_write_5m_tokens=3, cache_write_1h_tokens=2, reasoning_tokens=40)  # fmt: skip
    a0 = dataclasses.replace(_attempt("r3", 0, cost=1_000), **counts)
    a1 = dataclasses.replace(
        _attempt("r3", 1, cost=120_000), **{k: 2 * v for k, v in counts.items()}
    )
    failed_a0 = dataclasses.replace(a0, outcome="failed", status=503)
    out = resolve_lines(_lines((a0, True), (a1, True), (failed_a0, False)))
    request = out[-1]
    assert request.kind == "request" and request.outcome == "interrupted"
    assert request.cost_micros == 121_000 and request.estimated
    assert {k: getattr(request, k) for k in counts} == {k: 3 * v for k, v in counts.items()}


def test_live_segments_are_left_to_their_owner(tmp_path: Path) -> None:
    live = Journal(tmp_path)
    live.append(make_records(1)[0])
    other = Journal(tmp_path)
    spool = Spool(tmp_path)
    assert other.recover(spool) == 0  # the flock of a live writer is respected
    assert spool.count() == 0 and live.statistics().segments == 1


_CHILD = """
import sys
from tests.test_ledger_helpers import make_records
from tests.test_ledger_journal import _attempt
from trioproxy.ledger.journal import Journal
journal = Journal(sys.argv[1])
for r in make_records(300, seed=7):
    journal.append(r)
journal.append(_attempt("orphan", 0, cost=250_000), intent=True)
journal.rotate()
journal.append(_attempt("orphan", 1, cost=500_000), intent=True)
print("ready", flush=True)
sys.stdin.read()
"""


REPO = Path(__file__).resolve().parents[1]


def run_and_kill_child(state_dir: Path) -> None:
    """A process journals records, then dies by SIGKILL before any reaches a database."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(state_dir)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


async def test_records_of_a_killed_process_are_replayed_exactly_once(tmp_path: Path) -> None:
    run_and_kill_child(tmp_path)
    assert len(list((tmp_path / JOURNAL_DIR).glob("*.jsonl"))) == 2
    expected = make_records(300, seed=7)
    orphans = 3  # two interrupted attempts and their request
    target = target_for("sqlite", None, tmp_path)  # type: ignore[arg-type]
    for _ in range(2):  # a second start-up finds nothing more to replay
        writer = LedgerWriter(
            await target.open(), Spool(tmp_path), journal=Journal(tmp_path), **FAST
        )  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            await wait_until(lambda w=writer: not w.spool.has_pending())
            await writer.aclose()
        await writer.backend.aclose()
        assert await target.distinct_keys() == (300 + orphans, 300 + orphans)
        want = totals_of(expected, "request")
        got = await target.raw_totals("request")
        assert got.count == want.count + 1
        assert got.cost_micros - want.cost_micros == 750_000  # the orphan's two intents
    assert list((tmp_path / JOURNAL_DIR).iterdir()) == []


def test_a_requests_final_records_are_one_write_of_their_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    intent = _attempt("r3", 0, cost=10_000)
    finals = [dataclasses.replace(intent, outcome="won", status=200), *make_records(2, seed=5)]
    journal.append(intent, intent=True)
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    os.write = counting_write  # type: ignore[assignment]
    try:
        seq = journal.append_all(finals)
    finally:
        os.write = real_write
    assert len(writes) == 1  # the three lines in one write(2)
    stats = journal.statistics()
    assert stats.appended == 4 and stats.outstanding == 4 and seq >= 0
    (segment,) = (tmp_path / JOURNAL_DIR).glob("*.jsonl")
    lines = segment.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4 and sum(writes) == sum(len(x) for x in lines[1:])
    out = resolve_lines(lines)
    assert all(r in out for r in finals) and intent not in out  # the final attempt replaces it
    assert orjson.loads(lines[0]) == {"_intent": True, **to_dict(intent)}
    assert [orjson.loads(x) for x in lines[1:]] == [to_dict(r) for r in finals]


@pytest.mark.parametrize("per_request", [False, True], ids=["one by one", "submit_all"])
async def test_segments_go_once_their_records_are_in_the_database(
    tmp_path: Path, per_request: bool
) -> None:
    target = target_for("sqlite", None, tmp_path)  # type: ignore[arg-type]
    journal = Journal(tmp_path)
    writer = LedgerWriter(
        await target.open(), Spool(tmp_path), journal=journal, fsync_interval=0.01, **FAST
    )  # type: ignore[arg-type]
    records = make_records(200, seed=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        token = writer.intend(_attempt("pending", 0, cost=0.1))
        if per_request:  # three records a request, each request's journaled in one write
            for i in range(0, len(records), 3):
                writer.submit_all(records[i : i + 3])
        else:
            for r in records:
                writer.submit(r)
        await wait_until(lambda: writer.statistics().written == 200)
        await wait_until(lambda: journal.statistics().outstanding == 1)  # the open intent
        assert journal.statistics().segments >= 1
        writer.resolve(token)
        await wait_until(lambda: journal.statistics().segments == 1)
        await wait_until(lambda: journal.statistics().bytes == 0)  # only a fresh, empty one
        await writer.aclose()
    await writer.backend.aclose()
    assert list((tmp_path / JOURNAL_DIR).iterdir()) == []


def test_a_token_of_one_journal_never_touches_another(tmp_path: Path) -> None:
    first, second = Journal(tmp_path / "a"), Journal(tmp_path / "b")
    token = first.append(make_records(1)[0], intent=True)
    second.append(make_records(1)[0])
    second.done(token)  # a stale token (e.g. from before a writer restart): ignored
    assert second.statistics().outstanding == 1 and first.statistics().outstanding == 1


def test_a_failing_disk_is_logged_once_per_interval_not_per_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full state disk logged an error line per journal append and per lost record (~4
    per request: 36,000 lines in 5 s from two workers), past journald's per-unit limit,
    which then drops the unit's other lines too. One line per interval now, with how many
    it stands for; the counts are the metrics'."""
    from trioproxy.ledger.spooler import Spooler

    journal = Journal(tmp_path)
    spooler = Spooler(Spool(tmp_path / "spool.jsonl"), journal)

    def full(*args: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    monkeypatch.setattr(spooler.spool, "append", full)
    caplog.set_level("ERROR", "trioproxy.ledger")
    records = make_records(200)
    for seq, r in enumerate(records):
        assert journal.append(r) == -1
        spooler.overflow(seq, r)
    lines = [m for m in caplog.messages if "failed" in m or "refuses writes" in m]
    assert len(lines) == 2, lines  # one of each kind in the interval
    assert journal.statistics().failed == 200 and len(spooler.held) == 200  # none lost
    assert spooler.lost == 0 and spooler.held_total == 200
    monkeypatch.undo()
    journal.close()


def _die(journal: Journal) -> None:
    """SIGKILL: the kernel closes the descriptors (and drops the locks); nothing else."""
    for seg in journal._segments.values():
        os.close(seg.fd)
    journal._segments.clear()


def _recovered(state_dir: Path) -> list[UsageRecord]:
    found: list[UsageRecord] = []
    Journal(state_dir).recover(Spool(state_dir), found)
    return found


@pytest.mark.parametrize("truncate_fails", [False, True])
def test_a_write_the_full_disk_cut_short_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, truncate_fails: bool
) -> None:
    """The disk fills in the middle of a line: half of it is written, then ENOSPC. The torn
    half stayed, the next append was glued to it and recovery skipped both (a stream's next
    progress line, and with its old intent resolved meanwhile, the stream was lost). The
    torn bytes are cut off, or, if even that fails, the torn line is ended."""
    journal = Journal(tmp_path)
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    def no_truncate(fd: int, size: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    if truncate_fails:
        monkeypatch.setattr(os, "ftruncate", no_truncate)
    assert journal.append(_attempt("torn", 0, cost=1), intent=True) == -1
    monkeypatch.undo()
    token = journal.append(_attempt("next", 0, cost=2), intent=True)
    assert token >= 0
    _die(journal)
    assert [r.request_id for r in _recovered(tmp_path) if r.kind == "attempt"] == ["next"]


def test_an_append_after_close_is_not_journaled(tmp_path: Path) -> None:
    """After ``close`` the segment's descriptor number may be another file's: an append
    wrote a journal line into it."""
    journal = Journal(tmp_path)
    journal.close()
    other = tmp_path / "unrelated.txt"
    fd = os.open(other, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert journal.append(_attempt("late", 0, cost=1), intent=True) == -1
    finally:
        os.close(fd)
    assert other.read_bytes() == b"" and journal.statistics().failed == 1


def test_a_worker_starting_beside_a_recovery_keeps_its_first_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment made under its own name could be locked by another worker's recovery
    between its creation and its owner's lock, found empty and deleted: its owner then
    journaled into a deleted file. The other worker's recovery now runs in that gap."""
    import fcntl

    from trioproxy.ledger import journal as journal_mod

    other = Journal(tmp_path)
    real_flock = fcntl.flock
    ran = []

    def flock(fd: int, op: int) -> None:
        if not ran:
            ran.append(other.recover(Spool(tmp_path)))
        real_flock(fd, op)

    monkeypatch.setattr(journal_mod.fcntl, "flock", flock)
    starting = Journal(tmp_path)
    monkeypatch.undo()
    assert ran == [0]
    starting.append(_attempt("rid-a", 0, cost=1), intent=True)
    _die(starting)
    assert any(r.request_id == "rid-a" for r in _recovered(tmp_path))

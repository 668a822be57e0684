"""The ledger journal: usage records made durable against process death before the database.

Every record the gateway submits is appended, as one JSON line, to a *segment* file under
``state_dir/ledger-journal/`` before it enters the writer's memory channel. So is an *intent*:
the provisional record of an upstream call about to be made (input tokens estimated from the
prompt, outcome ``interrupted``, status 0), written before the call leaves the gateway. A
``write`` reaches the kernel's page cache, which survives the death of the process (SIGKILL,
OOM kill); ``fsync`` (every ``fsync_interval`` seconds, by the writer) bounds what a power
loss can take.

Each live segment is held with an exclusive ``flock`` by the process that writes it. A segment
is deleted once every record in it is durable elsewhere (in the database, or fsync'd in the
spool) and every intent in it is resolved (its request's final records were journaled), and
only after every older segment of the same process: so a record's intent is never in the
journal when its final record is not.

At start-up (and every spool check) :meth:`Journal.recover` takes the segments no live process
holds, turns each dead process's lines into records (final records win; an intent without its
final record becomes an ``interrupted`` attempt; a request whose request record is missing gets
an ``interrupted`` one carrying its attempts' cost and tokens) and moves them into the spool
(fsync'd), which the writer replays. The database ignores records it already has (key
``request_id, kind, attempt, target``), so a record is counted exactly once however often it
is replayed.

Appends are synchronous and short (one ``write`` to the page cache, a few microseconds) and
never raise: a failed append is logged and counted, and the record still reaches the writer
(which holds it in memory if the state disk refuses its spool too: ``spooler.py``).
A request's final records (its attempts and its request record) are appended together, as
one ``write`` (:meth:`Journal.append_all`); its intents are written one by one, each before
its upstream call.
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import logging
import math
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from trioproxy.core.types import TOKEN_COUNTS
from trioproxy.ledger.backend import record_from_dict
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spool import Spool
from trioproxy.telemetry.log_every import LogEvery

log = logging.getLogger("trioproxy.ledger")

JOURNAL_DIR = "ledger-journal"
_segment_numbers = itertools.count()
"""Unique in the process: a token of one journal never names another's segment."""
INTENT = "_intent"
"""Marker key of an intent line."""


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    fd: int
    outstanding: int = 0
    """Records not yet durable elsewhere plus intents not yet resolved."""
    lines: int = 0
    size: int = 0
    unsynced: bool = False
    torn: bool = False
    """A failed append left a torn line at the end that could not be cut off."""


@dataclass(frozen=True, slots=True)
class JournalStatistics:
    segments: int
    bytes: int
    outstanding: int
    appended: int
    failed: int
    """Appends that failed (disk full, I/O error): those records were not journaled."""
    recovered: int
    """Records this process recovered from dead segments into the spool."""


@dataclass(slots=True)
class _Replay:
    finals: dict[tuple[str, str, int, str], UsageRecord] = field(default_factory=dict)
    intents: dict[tuple[str, str, int, str], UsageRecord] = field(default_factory=dict)


def _key(r: UsageRecord) -> tuple[str, str, int, str]:
    return (r.request_id, r.kind, r.attempt, r.target or "")


_INTENT_HEAD = b'{"' + INTENT.encode() + b'":true,'


def _line(record: UsageRecord, *, intent: bool) -> bytes:
    """One journal line: the record's fields as a JSON object (orjson writes the dataclass
    itself, field by field in order), an intent's with the :data:`INTENT` marker first."""
    data = orjson.dumps(record)
    if intent:
        data = _INTENT_HEAD + data[1:]
    return data + b"\n"


_SUMMED_TOKENS = (*TOKEN_COUNTS, "reasoning_tokens")
"""The token counts a made-up request record sums over its attempts, as it sums their cost:
the ledger's roll-ups, its spend reports and a budget rebuild's token windows read them."""


def resolve_lines(lines: Iterable[bytes]) -> list[UsageRecord]:
    """The records one dead process's journal lines (in order) stand for; pure. A request
    without its request record gets a made-up one (``interrupted``) carrying the sum of its
    attempts' cost and tokens."""
    by_request: dict[str, _Replay] = {}
    for raw in lines:
        try:
            data = orjson.loads(raw)
            intent = bool(data.pop(INTENT, False))
            record = record_from_dict(data)
        except (ValueError, TypeError, KeyError):
            continue  # a line torn by the crash
        entry = by_request.setdefault(record.request_id, _Replay())
        (entry.intents if intent else entry.finals)[_key(record)] = record
    out: list[UsageRecord] = []
    for entry in by_request.values():
        finals = list(entry.finals.values())
        out.extend(finals)
        if any(r.kind == "request" for r in finals):
            continue  # the request ended: its final records are the whole truth
        orphans = [r for k, r in entry.intents.items() if k not in entry.finals]
        out.extend(orphans)
        attempts = [r for r in (*finals, *orphans) if r.kind == "attempt"]
        if attempts:
            first = min(attempts, key=lambda r: r.ts)
            tokens = {n: sum(getattr(r, n) for r in attempts) for n in _SUMMED_TOKENS}
            out.append(
                dataclasses.replace(
                    first, kind="request", attempt=0, target=None, provider=None,
                    provider_model=None, estimated=True, **tokens,
                    cost_micros=sum(r.cost_micros for r in attempts), hedge_role=None,
                    fallback_depth=0, outcome="interrupted", status=0,
                    error_kind="interrupted",
                )
            )  # fmt: skip
    return out


class Journal:
    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir) / JOURNAL_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._segments: dict[int, _Segment] = {}
        self._appended = self._failed = self._recovered = 0
        self._failed_log = LogEvery()
        self.failed_at = -math.inf
        """``time.monotonic()`` of the last append that failed."""
        self._closed = False
        self._dir_unsynced = False
        """A segment was created since the last sync: its directory entry is not durable yet."""
        self._current = self._open_segment()

    # -- hot path (event loop) -------------------------------------------------------------
    def append(self, record: UsageRecord, *, intent: bool = False) -> int:
        """Journal ``record`` (or an intent); return its segment number for :meth:`done`."""
        return self._write(_line(record, intent=intent), 1)

    def append_all(self, records: Sequence[UsageRecord]) -> int:
        """Journal ``records`` (final records, not intents) in one write; return their
        segment number: :meth:`done` once for each of them."""
        return self._write(b"".join([_line(r, intent=False) for r in records]), len(records))

    def _write(self, data: bytes, n: int) -> int:
        """Append ``data`` (``n`` lines) whole, or nothing: a write the disk cut short (full)
        is cut off again (a torn line left there glued the next append to it, and recovery
        skipped both: a stream's next progress, then its old intent resolved, lost it all)."""
        seg = self._current
        if seg.torn:  # a torn line is still there: end it first (recovery skips it)
            data = b"\n" + data
        if self._closed:  # after shutdown (its fd may be another file's now): not journaled
            self._failed += n
            return -1
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(seg.fd, view) :]
        except OSError as exc:
            if len(view) < len(data):
                self._cut_back(seg, len(data) - len(view))
            self._failed += n
            self.failed_at = time.monotonic()
            if (skipped := self._failed_log.due()) is not None:
                log.error("ledger journal append failed (%d records not journaled; %d more "
                          "failed appends since the last such line): %s", n, skipped, exc)  # fmt: skip
            return -1
        seg.torn = False
        seg.outstanding += n
        seg.lines += n
        seg.size += len(data)
        seg.unsynced = True
        self._appended += n
        return seg.seq

    def _cut_back(self, seg: _Segment, torn: int) -> None:
        """Remove the ``torn`` bytes a failed append left at the end of ``seg``; if even that
        fails, end the torn line so that the next append starts a line of its own."""
        try:
            os.ftruncate(seg.fd, seg.size)
        except OSError:
            seg.size += torn
            seg.torn = True

    def done(self, seq: int, n: int = 1) -> None:
        """``n`` entries of segment ``seq`` are durable elsewhere (or resolved)."""
        seg = self._segments.get(seq)
        if seg is not None:
            seg.outstanding -= n

    # -- maintenance (the writer task, one call at a time) ------------------------------------
    def rotate(self) -> int:
        """Start a new segment if the current one has lines; delete the finished prefix of old
        segments. Returns how many segments were deleted."""
        if self._current.lines and not self._closed:
            try:
                self._current = self._open_segment()
            except OSError as exc:  # a read-only disk: go on in this one, delete what is done
                if self._failed_log.due() is not None:
                    log.error("ledger journal: no new segment: %s", exc)
        deleted = 0
        for seq in sorted(self._segments):
            seg = self._segments[seq]
            if seg is self._current or seg.outstanding > 0:
                break
            self._drop(seg)
            deleted += 1
        return deleted

    def sync(self) -> None:
        """fsync every segment written since the last sync (blocking: run in a thread)."""
        for seg in list(self._segments.values()):
            if seg.unsynced:
                seg.unsynced = False
                os.fsync(seg.fd)
        self._sync_dir()

    def _sync_dir(self) -> None:
        """fsync the journal directory once new segments exist: a synced segment whose
        directory entry is not durable can vanish in a power loss."""
        if not self._dir_unsynced:
            return
        self._dir_unsynced = False
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Shutdown: delete what is finished, keep (unlocked) what is not, for recovery. A
        disk error (full, read-only) is raised once every segment is closed: a segment left
        open stayed locked, and no recovery in this process could read it."""
        self._closed = True
        error: OSError | None = None
        try:
            for seq in sorted(self._segments):
                seg = self._segments[seq]
                if seg.outstanding > 0 and seg.lines:
                    break
                self._drop(seg)
        except OSError as exc:
            error = exc
        for seg in list(self._segments.values()):
            try:
                if seg.unsynced:
                    os.fsync(seg.fd)
            except OSError as exc:
                error = error or exc
            os.close(seg.fd)
        self._segments.clear()
        try:
            self._sync_dir()
        except OSError as exc:
            error = error or exc
        if error is not None:
            raise error

    def statistics(self) -> JournalStatistics:
        segs = list(self._segments.values())
        return JournalStatistics(
            segments=len(segs), bytes=sum(s.size for s in segs),
            outstanding=sum(s.outstanding for s in segs), appended=self._appended,
            failed=self._failed, recovered=self._recovered,
        )  # fmt: skip

    # -- recovery (blocking: run in a thread) ------------------------------------------------
    def recover(self, spool: Spool, found: list[UsageRecord] | None = None) -> int:
        """Move the records of dead processes' segments into ``spool`` (fsync'd); return how
        many (and add them to ``found``). Segments another live process holds are left
        alone."""
        groups: dict[str, list[tuple[int, Path]]] = {}
        for path in self.dir.glob("*.jsonl"):
            owner, _, seq = path.stem.rpartition("-")
            if owner and owner != self._owner and seq.isdigit():
                groups.setdefault(owner, []).append((int(seq), path))
        total = 0
        for owner, segments in groups.items():
            total += self._recover_group(owner, sorted(segments), spool, found)
        self._recovered += total
        return total

    def _recover_group(
        self, owner: str, segments: list[tuple[int, Path]], spool: Spool,
        found: list[UsageRecord] | None,
    ) -> int:  # fmt: skip
        fds: list[int] = []
        try:
            for _, path in segments:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    return 0  # another process is recovering this group
                fds.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0  # its owner is alive (or another process is recovering it)
                if os.fstat(fd).st_nlink == 0:
                    return 0  # recovered and deleted meanwhile
            records = resolve_lines(_lines(fds))
            if records:
                spool.append(records, fsync=True)
                log.warning(
                    "ledger journal: recovered %d records of process %s (%d segments)",
                    len(records), owner, len(segments),
                )  # fmt: skip
            for _, path in segments:
                path.unlink(missing_ok=True)
            if found is not None:
                found.extend(records)
            return len(records)
        finally:
            for fd in fds:
                os.close(fd)

    # -- internals -------------------------------------------------------------------------
    def _open_segment(self) -> _Segment:
        """A new segment, locked before it has its name: made under a name recovery does not
        read, then renamed (made under its own name, another worker's recovery could lock it
        first, find it empty and delete it, and this worker journaled into a deleted file)."""
        seq = next(_segment_numbers)
        path = self.dir / f"{self._owner}-{seq}.jsonl"
        making = path.with_suffix(".new")
        fd = os.open(making, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, path)
        seg = _Segment(seq, path, fd)
        self._segments[seq] = seg
        self._dir_unsynced = True
        return seg

    def _drop(self, seg: _Segment) -> None:
        seg.path.unlink(missing_ok=True)
        os.close(seg.fd)
        del self._segments[seg.seq]


def _lines(fds: list[int]) -> Iterator[bytes]:
    for fd in fds:
        with os.fdopen(os.dup(fd), "rb") as fh:
            yield from fh


__all__ = ["JOURNAL_DIR", "Journal", "JournalStatistics", "resolve_lines"]

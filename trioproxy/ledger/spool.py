"""The ledger spool: an append-only JSON-lines file in ``state_dir`` for records the database
could not take (database down, or the writer's channel full).

Several gateway processes may share one spool. Appends open the file with ``O_APPEND``, take an
exclusive ``flock``, check that the path still names the file they opened (a replayer may have
renamed it), write whole lines with one ``write``, and optionally ``fsync``. A write the disk
cuts short (full) is cut off again, or, if that fails too, its torn line is ended by the next
append (it is skipped and counted at replay, and the next record is not glued to it). A replayer *claims*
the spool by renaming it (under the same lock) to ``<name>.replay-<pid>-<n>``, replays the claimed
file into the database, and deletes it. A claimed file left behind by a crash is picked up by the
next replay; replays are idempotent (the database ignores records it already has), so two
processes replaying the same file cannot double-count.

All methods are synchronous and take an exclusive ``flock``: a call can wait for a replayer
that holds it.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from trioproxy.ledger.backend import record_from_dict
from trioproxy.ledger.columns import to_dict
from trioproxy.ledger.record import UsageRecord

SPOOL_NAME = "ledger-spool.jsonl"
_claims = itertools.count()


class Spool:
    def __init__(self, state_dir: str | Path, *, name: str = SPOOL_NAME) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / name
        self.appended = 0
        """Records appended by this process (statistics)."""
        self.corrupt_lines = 0
        """Unparseable lines skipped while reading (a torn write from a crash)."""

    def _open_locked(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # renamed away by a replayer between open and lock: reopen

    def append(self, records: Iterable[UsageRecord], *, fsync: bool = True) -> int:
        """Append records as JSON lines; return how many. ``fsync`` makes them survive power loss."""
        data = "".join(json.dumps(to_dict(r), separators=(",", ":")) + "\n" for r in records)
        if not data:
            return 0
        fd = self._open_locked()
        try:
            size = os.fstat(fd).st_size
            encoded = data.encode()
            if size and os.pread(fd, 1, size - 1) != b"\n":
                encoded = b"\n" + encoded  # a torn line an earlier failure left: end it
            view = memoryview(encoded)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                if len(view) < len(encoded):
                    _cut_back(fd, size)
                raise
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the flock
        n = data.count("\n")
        self.appended += n
        return n

    def sync(self) -> None:
        """fsync the spool (after unsynced overflow appends)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def claim(self) -> list[Path]:
        """Take the current spool (renamed) plus claimed files left by earlier replays."""
        claimed = sorted(self.dir.glob(f"{self.path.name}.replay-*"))
        if self.path.exists():
            fd = self._open_locked()
            try:
                target = self.path.with_name(
                    f"{self.path.name}.replay-{os.getpid()}-{next(_claims)}"
                )
                os.rename(self.path, target)
                claimed.append(target)
            finally:
                os.close(fd)
        return claimed

    def has_pending(self) -> bool:
        return self.path.exists() or any(self.dir.glob(f"{self.path.name}.replay-*"))

    def read(self, path: Path) -> Iterator[UsageRecord]:
        """Records of one claimed file; lines a crash tore are counted and skipped."""
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            for line in fh:
                try:
                    yield record_from_dict(json.loads(line))
                except (ValueError, TypeError):
                    self.corrupt_lines += 1

    def release(self, path: Path) -> None:
        """Delete a claimed file once all its records are in the database."""
        path.unlink(missing_ok=True)

    def count(self) -> int:
        """Records currently spooled (all files); for tests and statistics."""
        files = [self.path, *self.dir.glob(f"{self.path.name}.replay-*")]
        return sum(sum(1 for _ in self.read(f)) for f in files if f.exists())


def _cut_back(fd: int, size: int) -> None:
    """Remove what a write the disk cut short (full) left after ``size``: a torn line would
    glue the next append's first record to it, and replay skipped both. If even that fails,
    the next append ends the torn line first."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


__all__ = ["SPOOL_NAME", "Spool"]

"""The ledger through a state disk that refuses writes (full: ENOSPC; read-only: EROFS).

The disk is refused at the file-write seam (the module's ``os``), no mount needed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from tests.test_ledger_helpers import make_records
from trioproxy.ledger import spool as spool_mod
from trioproxy.ledger.spool import Spool

_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT


class RefusingDisk:
    """``os`` as journal.py and spool.py see it: while ``refusing``, every write fails with
    ``err`` (EROFS: every open for writing, rename and truncate too); else the real one."""

    def __init__(self, err: int) -> None:
        self.err = err
        self.refusing = False
        self.refused = 0

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

"""The state directory's disk: room to start in, what a failing write means, and whether the
files this process opened are still the ones there.

* :func:`probe_room`: ``serve`` and ``check-config`` write and fsync a probe file of
  :data:`PROBE_BYTES` in the state directory before starting. An empty file (the old check)
  was made on a full filesystem too: ``check-config`` said ok, then every worker and the
  control plane died 6 times on "database or disk is full" and the service stopped, no line
  naming the disk (review).
* :func:`start_failure`: a store that cannot open at start-up for the disk is one line
  naming the directory and the error (:func:`disk_condition`: read-only or full, from
  ``statvfs``), not a critical traceback per try.
* :class:`StateWatch`: the state directory's store files deleted or replaced while the
  service runs (``rm -rf var/*``): SQLite kept writing to the unlinked files, silently, and
  their state was gone at the next start (the demo key made anew; review). A ``stat`` per
  file every :data:`WATCH_S` (the ``state-watch`` service): one error line, and a
  ``/readyz`` warning (not a fault: the stores work on).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio

log = logging.getLogger("trioproxy.state")

PROBE_BYTES = 1 << 20
"""The room the state directory must have to start: 1 MiB. A fresh start writes ~0.7 MB into
it (measured: five SQLite files in WAL mode, each with a 32 KiB shared-memory file and a
write-ahead log of its schema pages, 12-210 KB; the ledger journal, the demo and session
keys). Less than that and a store's first write fails at start-up. (The cache's embedding
model, ~22 MB built once into ``state_dir/models``, is not counted: without room the cache
falls back, the service runs.)"""
PROBE_NAME = ".trioproxy-room-probe"


def probe_room(state_dir: str | os.PathLike[str], size: int = PROBE_BYTES) -> None:
    """Write and fsync ``size`` bytes in a probe file in ``state_dir``, then remove it;
    ``OSError`` (its errno: full, read-only, quota, not writable) when that fails."""
    path = os.path.join(state_dir, f"{PROBE_NAME}.{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = bytes(64 * 1024)
        left = size
        while left > 0:
            left -= os.write(fd, block[: min(left, len(block))])
        os.fsync(fd)
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass


def room_problem(state_dir: str) -> str | None:
    """Why ``state_dir`` cannot hold a starting service's state (one line naming it and the
    error), or None."""
    try:
        probe_room(state_dir)
    except OSError as exc:
        return (f"{state_dir} has no room for the service's state: writing a "
                f"{PROBE_BYTES >> 20} MiB probe file failed: {_why(exc)}")  # fmt: skip
    return None


def parent_room_problem(parent: str) -> str | None:
    """Why the directory to be made in ``parent`` would have no room (``statvfs``: nothing
    is written where the directory is not made yet), or None."""
    try:
        st = os.statvfs(parent)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if st.f_flag & os.ST_RDONLY:
        return f"{parent} is on a read-only filesystem"
    if free < PROBE_BYTES:
        return (f"{parent} has {free} bytes free, less than the "
                f"{PROBE_BYTES >> 20} MiB a starting service writes")  # fmt: skip
    return None


def _why(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


def disk_condition(state_dir: str) -> str:
    """What the state disk has that refuses writes, from ``statvfs``: "read-only", "full",
    else "failing writes" (it names what it can see, no guess)."""
    try:
        st = os.statvfs(state_dir)
    except OSError as exc:
        return f"unreadable: {_why(exc)}"
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if st.f_bavail * st.f_frsize < PROBE_BYTES or (st.f_files and st.f_favail == 0):
        return "full"
    return "failing writes"


EXIT_STATE_DISK = 74
"""A worker's or the control plane's exit status when its state stores cannot be opened for
the disk (``EX_IOERR``): one error line said why."""
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO})
_DISK_SQLITE = ("disk is full", "readonly database", "disk I/O error")


def start_failure(exc: BaseException, state_dir: str) -> str | None:
    """One line naming the state directory and the error when ``exc`` (raised while the
    stores opened at start-up) is the disk's, else None (a bug keeps its traceback)."""
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError) and any(t in str(exc) for t in _DISK_SQLITE):
        why = str(exc)
    elif isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        why = f"{exc.filename}: {_why(exc)}" if exc.filename else _why(exc)
    else:
        return None
    return (f"cannot open the state stores in {os.path.abspath(state_dir)}: {why} (the disk "
            f"is {disk_condition(state_dir)}); not starting")  # fmt: skip


STATE_SUFFIXES = (".sqlite3",)
"""The files :class:`StateWatch` follows: the stores' databases (their ``-wal`` and ``-shm``
files come and go with them)."""


WATCH_S = 2.0
"""Between two checks of :class:`StateWatch`."""


class StateWatch:
    """The state directory's store files as this process found them once started; every
    :data:`WATCH_S` (:meth:`run`, a service) it checks which were deleted or replaced since:
    one error line per change, and :attr:`gone_text` for ``/readyz``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self._seen: dict[str, tuple[int, int]] = {}
        self._gone: tuple[str, ...] = ()
        self.gone_text: str | None = None
        """What is gone, for ``/readyz``; None while all is there."""

    def mark(self) -> None:
        """Take the state directory's store files as they are now (at start-up, once the
        stores are open). Blocking (a few ``stat``)."""
        seen: dict[str, tuple[int, int]] = {}
        try:
            st = os.stat(self.state_dir)
            seen[""] = (st.st_dev, st.st_ino)
            for entry in os.scandir(self.state_dir):
                if entry.name.endswith(STATE_SUFFIXES) and entry.is_file():
                    est = entry.stat()
                    seen[entry.name] = (est.st_dev, est.st_ino)
        except OSError:
            pass
        self._seen = seen

    def gone(self) -> list[str]:
        """The marked files (and the directory, named "") no longer there as marked."""
        out = []
        for name, ident in self._seen.items():
            try:
                st = os.stat(self.state_dir / name)
            except OSError:
                out.append(name)
                continue
            if (st.st_dev, st.st_ino) != ident:
                out.append(name)
        return out

    def check(self) -> None:
        """Look again: a change is one log line (blocking: a few ``stat``)."""
        gone = tuple(self.gone())
        if gone == self._gone:
            return
        self._gone = gone
        if gone:
            names = ", ".join(n or "the directory itself" for n in gone)
            text = (
                f"state directory {self.state_dir}: deleted or replaced while running "
                f"({names}); this process writes to the deleted files and their state is "
                "lost at the next start: restart the service"
            )
            log.error("%s", text)
            self.gone_text = text  # (after the line: /readyz never says what the log does not)
        else:
            self.gone_text = None
            log.info("state directory %s: its files are back", self.state_dir)

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """A service: :meth:`check` every :data:`WATCH_S` (``serve``'s start-up check and
        ``check-config`` import this module without an event loop)."""
        import trio

        task_status.started()
        while True:
            await trio.sleep(WATCH_S)
            await trio.to_thread.run_sync(self.check)


__all__ = [
    "EXIT_STATE_DISK",
    "PROBE_BYTES",
    "WATCH_S",
    "StateWatch",
    "disk_condition",
    "parent_room_problem",
    "probe_room",
    "room_problem",
    "start_failure",
]

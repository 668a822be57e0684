"""Access lines written together, once per turn of the Trio scheduler (:class:`LineBatch`)."""

from __future__ import annotations

import logging
import threading
from typing import TextIO

import trio

from trioproxy.telemetry import logs


class LineBatch:
    """The direct lines of :func:`~trioproxy.telemetry.logs.log_fields` (a request's access line) written together,
    once per turn of the Trio scheduler, instead of a write and a flush each: a line added
    wakes :meth:`run`, which runs after the tasks of the current turn have added theirs.
    Lines wait at most until the next turn, and never more than :data:`MAX_LINES`. Only the
    thread that runs :meth:`run` adds lines (others write their own); when :meth:`run` ends
    (cancelled at shutdown) what is pending is written and lines go out one by one again.
    A line of the ``logging`` path (a warning) does not wait, so it may precede an access
    line of the same turn."""

    MAX_LINES = 512
    ATOMIC_BYTES = 4096
    """The most one write carries (Linux's ``PIPE_BUF``): every worker writes to the same
    stderr (a pipe, or journald's stream), and a larger write can be split with another
    worker's line in its middle (seen: 332 of 80,000 lines torn with 4 workers and a slow
    reader). A single line longer than this goes alone, as it did before batching."""

    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self.handler = handler
        self._lines: list[str] = []
        self._sizes: list[int] = []
        """Each line's size in bytes (UTF-8)."""
        self._lot = trio.lowlevel.ParkingLot()
        self._thread = threading.get_ident()
        self.lost = 0
        """Lines the stream refused (a closed or broken stderr)."""

    def add(self, line: str) -> bool:
        """Queue ``line``; False (not queued) from another thread."""
        if threading.get_ident() != self._thread:
            return False
        if not self._lines:
            self._lot.unpark()
        self._lines.append(line)
        self._sizes.append(len(line) if line.isascii() else len(line.encode("utf-8", "replace")))
        if len(self._lines) >= self.MAX_LINES:
            self.flush()
        return True

    def flush(self) -> None:
        """Write what waits, whole lines in writes of at most :data:`ATOMIC_BYTES`."""
        if not self._lines:
            return
        lines, sizes = self._lines, self._sizes
        self._lines, self._sizes = [], []
        start, size = 0, 0
        for i, n in enumerate(sizes):
            if size and size + n > self.ATOMIC_BYTES:
                self._write(lines[start:i])
                start, size = i, 0
            size += n
        self._write(lines[start:])

    def _write(self, lines: list[str]) -> None:
        try:
            with self.handler.lock:  # type: ignore[union-attr]
                self.handler.stream.write("".join(lines))
                self.handler.flush()
        except Exception:  # the log stream itself fails: nowhere to say so but the count
            self.lost += len(lines)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write each turn's lines until cancelled (a service of the worker)."""
        self._thread = threading.get_ident()
        logs._batch[0] = self
        task_status.started()
        try:
            while True:
                await self._lot.park()
                self.flush()
        finally:
            if logs._batch[0] is self:
                logs._batch[0] = None
            self.flush()


def line_batch() -> LineBatch | None:
    """A batch for the handler :func:`configure_logging` installed (None: not configured)."""
    handler = logs._direct[0]
    return None if handler is None else LineBatch(handler)


__all__ = ["LineBatch", "line_batch"]

"""A reload (SIGHUP) that reaches a process of ``serve`` while it is still starting.

SIGHUP's default action ends a process. systemd accepts ``systemctl reload`` as soon as it
has started ``serve`` (``Type=exec``), and a process obeys signals only once its imports and
config are done (about a second): a reload in that window killed the supervisor or a child,
and reloads repeated right after a start stopped the whole service (six fast deaths).
Importing :mod:`trioproxy.server` (the first thing every process of ``serve`` imports)
calls :func:`hold_reloads`: a SIGHUP is then remembered, and :func:`reload_held` says so once
the process obeys signals. Only the default action is replaced, and only on the main thread
(a handler someone installed stays). No imports beyond the standard library's.
"""

from __future__ import annotations

import signal
import threading

_held = [False]


def _remember(signum: int, frame: object) -> None:
    _held[0] = True


def hold_reloads() -> None:
    """Remember SIGHUP instead of dying of it, if nothing handles it yet (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _remember)


def reload_held() -> bool:
    """Whether a SIGHUP arrived while held (and forget it)."""
    held, _held[0] = _held[0], False
    return held


__all__ = ["hold_reloads", "reload_held"]

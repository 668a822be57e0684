"""Log lines an operator can use: one JSON object per line when stderr is not a terminal (what
journald and log shippers want), aligned text when it is.

Every line carries time (UTC, milliseconds), level, logger, process id and message; structured
fields travel in ``extra={"fields": {...}}`` and become JSON keys (text: ``key=value``). The
serve runner calls :func:`configure_logging` in every worker process, so workers log exactly
like a single process. What the gateway logs never includes prompts, answers or secrets.

Under systemd (stderr is the journal's stream: ``JOURNAL_STREAM`` names its device and inode)
each line starts with its syslog priority (``<4>`` for a warning, as ``sd-daemon.h``'s
``SD_WARNING``); journald takes it off and files the line at that priority, so ``journalctl
-p warning`` finds the warnings and errors (without it every line would be filed as info).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "json", "text")
QUIET = ("httpx", "httpx2", "httpcore", "httpcore2", "hpack")
"""Libraries that log a line per upstream request at INFO/DEBUG."""


_pid = [os.getpid()]
"""This process's id (``os.getpid`` is a system call; a line per request needs it)."""
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))

_second: list[tuple[int, str]] = [(-1, "")]
"""The last second formatted (a line per request: most share their second)."""


def _when(record: logging.LogRecord) -> str:
    return _stamp(record.created)


def _stamp(created: float) -> str:
    whole = int(created)
    seen, text = _second[0]
    if whole != seen:
        text = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second[0] = (whole, text)
    return f"{text}{int((created - whole) * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


BASE_KEYS = frozenset(("ts", "level", "logger", "pid", "msg", "exc"))
"""What every JSON line says itself; a field of the same name is written as ``field_<name>``
(a budget alert's own ``level``, ``threshold``, must not hide the line's ``warning``)."""


def _add_fields(out: dict[str, Any], fields: Mapping[str, Any]) -> None:
    if BASE_KEYS.isdisjoint(fields.keys()):  # every access line: one C loop, no renames
        out.update(fields)
        return
    for k, v in fields.items():
        out[f"field_{k}" if k in BASE_KEYS else k] = v


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _when(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        _add_fields(out, _fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()

    def line(self, created: float, levelno: int, name: str, msg: str,
             fields: Mapping[str, Any]) -> str:  # fmt: skip
        """What :meth:`format` makes of a record without ``exc_info`` (no record needed)."""
        out: dict[str, Any] = {
            "ts": _stamp(created), "level": logging.getLevelName(levelno).lower(),
            "logger": name, "pid": _pid[0], "msg": msg,
        }  # fmt: skip
        _add_fields(out, fields)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_when(record), f"{record.levelname:<7}", record.name, record.getMessage()]
        parts += [f"{k}={_text(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    def line(self, created: float, levelno: int, name: str, msg: str,
             fields: Mapping[str, Any]) -> str:  # fmt: skip
        """What :meth:`format` makes of a record without ``exc_info`` (no record needed)."""
        parts = [_stamp(created), f"{logging.getLevelName(levelno):<7}", name, msg]
        parts += [f"{k}={_text(v)}" for k, v in fields.items()]
        return " ".join(parts)


def _text(value: object) -> str:
    """A field's value in a text line: bare when it is one printable word, else JSON-quoted
    (a caller's path with a percent-encoded newline would forge a second line)."""
    if isinstance(value, str):
        bare = value and " " not in value and value.isprintable()
        return value if bare else orjson.dumps(value).decode()
    if isinstance(value, (list, dict)):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def syslog_priority(levelno: int) -> int:
    """A logging level's syslog priority (a level between two takes the lower one's)."""
    for floor, priority in ((50, 2), (40, 3), (30, 4), (20, 6)):
        if levelno >= floor:
            return priority
    return 7


class JournalPriority(logging.Formatter):
    """Another formatter's line behind its syslog priority prefix (``<3>...``), for journald."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{self.inner.format(record)}"

    def line(self, created: float, levelno: int, name: str, msg: str,
             fields: Mapping[str, Any]) -> str:  # fmt: skip
        inner = self.inner.line(created, levelno, name, msg, fields)  # type: ignore[attr-defined]
        return f"<{syslog_priority(levelno)}>{inner}"


_direct: list[logging.StreamHandler[TextIO] | None] = [None]
"""The handler :func:`configure_logging` installed (its formatter has ``line``)."""


def _direct_handler(logger: logging.Logger) -> logging.StreamHandler[TextIO] | None:
    """The handler a line of ``logger`` reaches, when that is only ours: the logger and its
    ancestors add no handler or filter of their own (anything else, e.g. pytest's caplog,
    takes the ``logging`` path)."""
    handler = _direct[0]
    if handler is None or handler.filters:
        return None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters or node.disabled:
            return None
        if node.parent is None:  # the root: ours alone
            return handler if node.handlers == [handler] else None
        if node.handlers:
            return None
        if not node.propagate:
            return None
        node = node.parent  # type: ignore[assignment]
    return None


def log_fields(logger: logging.Logger, levelno: int, msg: str, fields: Mapping[str, Any]) -> None:
    """``logger.log(levelno, msg, extra={"fields": fields})``, the same line, formatted once
    and written by the handler :func:`configure_logging` installed, without a ``LogRecord``
    and the ``logging`` machinery per line (a request's access line: ~3x cheaper). Any other
    handler set-up takes the ``logging`` path. The caller checks ``isEnabledFor`` first."""
    handler = _direct_handler(logger)
    if handler is None or levelno < handler.level:
        logger.log(levelno, msg, extra={"fields": fields})
        return
    line = handler.formatter.line(  # type: ignore[union-attr]
        time.time(), levelno, logger.name, msg, fields
    )
    batch = _batch[0]
    if batch is not None and batch.handler is handler and batch.add(line + handler.terminator):
        return
    with handler.lock:  # type: ignore[union-attr]
        handler.stream.write(line + handler.terminator)
        handler.flush()


_batch: list[Any] = [None]
"""The running :class:`~trioproxy.telemetry.line_batch.LineBatch` of this process, if any
(its own module: this one loads no Trio, the ``serve`` supervisor logs through it too)."""


def log_uncaught() -> None:
    """An exception that ends the process is logged as one line (level critical, the
    traceback in the line's ``exc``), not printed raw: under journald each line of a raw
    traceback was its own entry at info level, so ``journalctl -p warning`` showed that a
    worker died but not why. Ctrl-C keeps Python's own handling."""

    def hook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        logging.getLogger("trioproxy").critical(
            "the process ends on an uncaught exception", exc_info=(kind, exc, tb)
        )

    sys.excepthook = hook


def is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal's stream (systemd's ``JOURNAL_STREAM`` names it)."""
    want = os.environ.get("JOURNAL_STREAM")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # io.StringIO and other fd-less streams
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto``: text on a terminal, JSON otherwise."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route every logger of this process to ``stream`` (stderr) as ``fmt`` at ``level``."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    # what no line prints is not collected per record: the caller's file and line (a
    # stack walk per record; the logging HOWTO's "Optimization"), thread names
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    line = JsonFormatter() if resolve_format(fmt, out) == "json" else TextFormatter()
    handler.setFormatter(JournalPriority(line) if is_journal(out) else line)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _direct[0] = handler
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in ("hypercorn.error", "hypercorn.access"):  # hypercorn's own handlers: ours only
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True


__all__ = [
    "FORMATS",
    "LEVELS",
    "JournalPriority",
    "configure_logging",
    "is_journal",
    "log_fields",
    "log_uncaught",
    "resolve_format",
]

"""Logs: one structured access line per request, JSON off a terminal, no prompt/answer/secret."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from tests.fixtures_gateway import start_simulator
from tests.proc import GatewayProcess
from tests.rawhttp import post
from tests.settings_factory import KEY
from tests.test_e2e_processes import AUTH, config
from trioproxy.simulator.faults import Fault
from trioproxy.telemetry.line_batch import line_batch
from trioproxy.telemetry.logs import configure_logging, log_fields, resolve_format


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield None
    root.handlers[:], root.level = saved[0], saved[1]


def test_json_off_a_terminal_text_on_one(restore_logging: object) -> None:
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("auto", _Tty()) == "text"
    out = io.StringIO()
    configure_logging("info", "auto", out)
    logging.getLogger("trioproxy.test").info("hello %s", "there", extra={"fields": {"n": 3}})
    logging.getLogger("trioproxy.test").debug("not at info")
    (line,) = out.getvalue().splitlines()
    data = orjson.loads(line)
    assert data["msg"] == "hello there" and data["n"] == 3 and data["level"] == "info"
    assert data["logger"] == "trioproxy.test" and data["ts"].endswith("Z") and data["pid"] > 0
    tty = _Tty()
    configure_logging("debug", "auto", tty)
    logging.getLogger("trioproxy.test").debug("x", extra={"fields": {"route": "chat", "a": "b c"}})
    assert tty.getvalue().rstrip().endswith('DEBUG   trioproxy.test x route=chat a="b c"')
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud", "auto", out)


def test_a_text_line_quotes_a_field_with_a_control_character(restore_logging: object) -> None:
    """A refused request's path is the caller's, percent-decoded: "%0A" made a newline, and
    the text format wrote it bare, so a caller could forge a second line."""
    out = io.StringIO()
    configure_logging("info", "text", out)
    path = "/v1/x\r\n2026-12-07T00:00:00Z\tERROR\ttrioproxy.forged"  # no space in it
    logging.getLogger("trioproxy.test").info("refused", extra={"fields": {"path": path}})
    (line,) = out.getvalue().splitlines()
    assert line.endswith('path="/v1/x\\r\\n2026-12-07T00:00:00Z\\tERROR\\ttrioproxy.forged"')


def test_a_field_never_hides_what_the_line_says_itself(restore_logging: object) -> None:
    """A budget alert's fields hold its own ``level`` ("threshold"): the line's level stays
    the logging level, and the alert's is kept beside it."""
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = logging.getLogger("trioproxy.budget.alerts")
    fields = {"event": "budget_alert", "level": "threshold", "msg": "m", "team": "t"}
    log.warning("budget_alert", extra={"fields": fields})
    log_fields(log, logging.WARNING, "budget_alert", fields)
    for line in out.getvalue().splitlines():
        data = orjson.loads(line)
        assert data["level"] == "warning" and data["msg"] == "budget_alert"
        assert data["field_level"] == "threshold" and data["field_msg"] == "m"
        assert data["team"] == "t"


def test_lines_to_the_journal_carry_their_syslog_priority(
    restore_logging: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd, stderr is journald's stream (JOURNAL_STREAM=<dev>:<inode>): each line
    starts with <priority>, which journald files the line at and takes off, so that
    `journalctl -p warning` finds warnings. Any other stream gets the bare line."""
    log = logging.getLogger("trioproxy.test")
    with (tmp_path / "journal").open("w+") as journal:
        st = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging("debug", "auto", journal)
        log.debug("d")
        log.info("i", extra={"fields": {"n": 1}})
        log.warning("w")
        log.error("e")
        log.critical("c")
        journal.seek(0)
        lines = journal.read().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    assert [orjson.loads(line[3:])["msg"] for line in lines] == ["d", "i", "w", "e", "c"]
    with (tmp_path / "other").open("w+") as other:  # a file that is not the journal's stream
        configure_logging("info", "json", other)
        log.warning("w")
        other.seek(0)
        assert orjson.loads(other.read())["msg"] == "w"
    monkeypatch.delenv("JOURNAL_STREAM")
    out = io.StringIO()
    configure_logging("info", "json", out)
    log.error("e")
    assert orjson.loads(out.getvalue())["level"] == "error"


FIELDS = {
    "request_id": "req_1",
    "attempts": [{"target": "m", "ms": 1.5}],
    "cost_usd": 3.2e-05,
    "ttfb_ms": None,
    "text": "two words",
    "client_left": False,
}


@pytest.mark.parametrize("fmt", ["json", "text", "journal"])
def test_a_line_written_directly_is_the_line_logging_writes(
    restore_logging: object, fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """log_fields (the access line's path: no LogRecord) writes what logger.info(...,
    extra={"fields": ...}) writes, in every format; only the time stamp may differ."""
    log = logging.getLogger("trioproxy.access")
    with (tmp_path / "out").open("w+") as out:
        if fmt == "journal":
            st = os.fstat(out.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging("info", "text" if fmt == "text" else "json", out)
        log.info("request", extra={"fields": FIELDS})
        log_fields(log, logging.INFO, "request", FIELDS)
        out.seek(0)
        via_logging, direct = out.read().splitlines()
    if fmt == "text":  # the time stamp is the first word
        assert direct.split(" ", 1)[1] == via_logging.split(" ", 1)[1]
        assert "INFO    trioproxy.access request request_id=req_1" in direct
        return
    prefix = "<6>" if fmt == "journal" else ""
    assert direct.startswith(prefix) and via_logging.startswith(prefix)
    a, b = orjson.loads(via_logging[len(prefix) :]), orjson.loads(direct[len(prefix) :])
    assert a.pop("ts")[:16] == b.pop("ts")[:16]  # same minute
    assert a == b and list(a) == list(b)  # same keys in the same order
    assert b["level"] == "info" and b["logger"] == "trioproxy.access" and b["pid"] == os.getpid()


def test_a_line_takes_the_logging_path_when_another_handler_listens(
    restore_logging: object,
) -> None:
    """Another handler on the way (pytest's caplog, a library's) gets the line too."""
    out, extra = io.StringIO(), io.StringIO()
    configure_logging("info", "json", out)
    log = logging.getLogger("trioproxy.access")
    more = logging.StreamHandler(extra)
    log.addHandler(more)
    try:
        log_fields(log, logging.INFO, "request", {"n": 1})
    finally:
        log.removeHandler(more)
    assert orjson.loads(out.getvalue())["n"] == 1
    assert extra.getvalue() == "request\n"


class _CountingStream(io.StringIO):
    """Counts the stream's writes (each is a ``write`` system call on a real stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


async def test_lines_of_one_scheduler_turn_are_written_together(
    restore_logging: object, nursery: trio.Nursery
) -> None:
    """With the worker's line batch running, the access lines that tasks add in one turn of
    the scheduler reach the stream in one write, at the next turn; with none running, each
    line is its own write at once."""
    out = _CountingStream()
    configure_logging("info", "json", out)
    log = logging.getLogger("trioproxy.access")
    log_fields(log, logging.INFO, "request", {"n": 0})
    assert out.writes == 1  # no batch: at once
    batch = line_batch()
    assert batch is not None
    await nursery.start(batch.run)

    async def request(n: int) -> None:
        log_fields(log, logging.INFO, "request", {"n": n})
        assert out.writes == 1  # waits for the next turn

    async with trio.open_nursery() as turn:
        for n in range(1, 6):
            turn.start_soon(request, n)
    await trio.testing.wait_all_tasks_blocked()
    assert out.writes == 2  # the five lines in one write
    assert sorted(orjson.loads(x)["n"] for x in out.getvalue().splitlines()) == [0, 1, 2, 3, 4, 5]


async def test_lines_pending_at_shutdown_are_written(restore_logging: object) -> None:
    """Cancelling the batch (the worker stops) writes what waits; later lines go out one by
    one; a line from another thread never waits."""
    out = _CountingStream()
    configure_logging("info", "json", out)
    log = logging.getLogger("trioproxy.access")
    batch = line_batch()
    assert batch is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(batch.run)
        await trio.to_thread.run_sync(log_fields, log, logging.INFO, "request", {"n": "thread"})
        assert out.writes == 1
        log_fields(log, logging.INFO, "request", {"n": 1})
        log_fields(log, logging.INFO, "request", {"n": 2})
        nursery.cancel_scope.cancel()
    assert out.writes == 2
    log_fields(log, logging.INFO, "request", {"n": 3})
    assert out.writes == 3
    assert [orjson.loads(x)["n"] for x in out.getvalue().splitlines()] == ["thread", 1, 2, 3]


PROMPT = "PROMPT-MARKER-7f3a please summarise the quarterly numbers"
PROVIDER_SECRET = "sk-provider-SECRET-4d2e9b"


async def test_a_request_logs_one_line_without_prompt_answer_or_secret(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    sim = await start_simulator(nursery, Fault(tokens=12))
    gw = GatewayProcess(config({"p": sim.url}, tmp_path), tmp_path, {"SIMKEY": PROVIDER_SECRET})
    await gw.start()
    try:
        body = {"model": "p", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
        r = await post(gw.url, "/v1/chat/completions", body, AUTH)
        assert r.status == 200 and r.complete
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.kill()
    answer = "".join(
        orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in r.body.decode().splitlines()
        if line.startswith("data: {") and orjson.loads(line[6:])["choices"]
    )
    assert len(answer) > 20
    text = gw.log.read_text()
    for secret in (PROMPT[:20], answer[:20], PROVIDER_SECRET, KEY):
        assert secret not in text
    lines = [orjson.loads(x) for x in text.splitlines() if x.startswith("{")]
    access = [x for x in lines if x["logger"] == "trioproxy.access"]
    assert len(access) == 1, text
    (line,) = access
    assert line["request_id"] == r.headers["x-request-id"]
    assert (line["key"], line["team"], line["user"], line["route"]) == ("k", "t1", "u1", "p")
    assert line["status"] == 200 and line["winner"] == "m-p" and line["cache"] in ("off", "miss")
    assert [(a["target"], a["outcome"]) for a in line["attempts"]] == [("m-p", "won")]
    assert line["output_tokens"] > 0 and line["cost_usd"] > 0 and line["ttfb_ms"] is not None
    assert line["client_left"] is False and line["duration_ms"] >= line["ttfb_ms"]


async def test_a_batch_goes_out_in_writes_no_other_worker_can_tear(
    restore_logging: object, nursery: trio.Nursery
) -> None:
    """Every worker writes to one stderr (a pipe, or journald's stream): a write up to
    PIPE_BUF (4096 bytes) is never split by another's, a larger one may be, with a line torn
    in its middle. A turn's lines go out as whole lines in writes of at most 4096 bytes; a
    line longer than that alone."""
    out = _CountingStream()
    writes: list[str] = []
    real = out.write

    def record(s: str) -> int:
        writes.append(s)
        return real(s)

    out.write = record  # type: ignore[method-assign]
    configure_logging("info", "json", out)
    log = logging.getLogger("trioproxy.access")
    batch = line_batch()
    assert batch is not None
    await nursery.start(batch.run)
    for n in range(100):  # ~600 bytes each, some not ASCII
        log_fields(log, logging.INFO, "request", {"n": n, "pad": "é" * 100 + "x" * 400})
    log_fields(log, logging.INFO, "request", {"n": "big", "pad": "y" * 9000})
    await trio.testing.wait_all_tasks_blocked()
    assert 15 <= len(writes) <= 30
    for w in writes:
        assert w.endswith("\n") and (len(w.encode()) <= 4096 or w.count("\n") == 1)
    assert [orjson.loads(x)["n"] for x in "".join(writes).splitlines()] == [*range(100), "big"]


def test_an_uncaught_exception_is_one_critical_line() -> None:
    """A worker that crashed at start-up printed its traceback raw: under journald, one
    entry per line at info level, so `journalctl -p warning` did not say why it died."""
    code = (
        "from trioproxy.telemetry.logs import configure_logging, log_uncaught\n"
        "configure_logging('info', 'json')\nlog_uncaught()\n"
        "raise RuntimeError('state_dir: No space left on device')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    entry = orjson.loads(line)
    assert entry["level"] == "critical" and "No space left on device" in entry["exc"]

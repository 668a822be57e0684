"""A usage sink beside the ledger that fails loses nothing: every record still reaches the
ledger (journal, then database), the request is answered as if nothing happened, and the
failure is logged once per interval (not once per request).

The sinks in front of the ledger (``edge/metrics.py: MetricsSink`` →
``ledger/sinks.py: AccessLogSink`` → the ledger) each run a side effect before handing the
record on; each case makes one of them raise, through the real gateway on real sockets and
the real SQLite ledger.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY
from tests.test_e2e_ledger import ledger_rows, three_routes
from trioproxy.ledger import sinks
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.service import LedgerService
from trioproxy.telemetry import logs

AUTH = {"authorization": f"Bearer {KEY}"}
REQUESTS = 3


class Raising(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("injected fault in a log filter")


class FullPipe:
    """stderr as a full non-blocking pipe: every write raises."""

    def write(self, _: str) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record)


@pytest.fixture
def sink_errors() -> Iterator[Collect]:
    """What the guarded sinks log (their own logger, apart from the access log)."""
    handler = Collect()
    logger = logging.getLogger(sinks.__name__)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, direct = root.handlers[:], root.level, logs._direct[0]
    try:
        yield
    finally:
        root.handlers[:], logs._direct[0] = handlers, direct
        root.setLevel(level)


def inject(
    g: Running, where: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if where == "metrics":

        def observe(rec: UsageRecord) -> None:
            raise RuntimeError("injected fault in metrics")

        monkeypatch.setattr(g.app.prometheus, "observe", observe)
    elif where == "access-filter":  # a logging filter (the logging path) that raises
        caplog.set_level(logging.INFO, logger="trioproxy.access")
        monkeypatch.setattr(logging.getLogger("trioproxy.access"), "filters", [Raising()])
    else:  # "access-stream": the direct path writes to a stream that refuses the line
        logs.configure_logging("info", "json", FullPipe())  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["metrics", "access-filter", "access-stream"])
async def test_a_failing_sink_loses_no_record_and_logs_once(
    nursery: trio.Nursery, where: str, monkeypatch: pytest.MonkeyPatch,
    sink_errors: Collect, restore_logging: None, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    sim = await start_simulator(nursery)
    state = tempfile.mkdtemp(prefix="tp-sinkfail-")
    settings = three_routes({"ok": sim.url}, state)
    ledger = LedgerService(settings.storage)
    g = await start_gateway(nursery, settings, sink=ledger, services=[ledger.run])  # type: ignore[arg-type]
    inject(g, where, monkeypatch, caplog)
    rids = []
    async with httpx.AsyncClient(base_url=g.url, headers=AUTH, timeout=30) as c:
        for i in range(REQUESTS):
            body: dict[str, Any] = {"model": "ok", "messages": [{"role": "user", "content": "hi"}],
                                    "stream": bool(i % 2)}  # fmt: skip
            r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            rids.append(r.headers["x-request-id"])
    assert ledger.writer is not None
    with trio.fail_after(10):  # the writer's database rows (it journals each record first)
        while ledger.writer.statistics().written < 2 * REQUESTS:
            await trio.sleep(0.02)
    rows = [(r["request_id"], r["kind"]) for r in ledger_rows(state, kind=None)]
    assert sorted(rows) == sorted([(rid, k) for rid in rids for k in ("attempt", "request")])
    assert ledger.writer.journal is not None  # each attempt's intent, then both final records
    assert ledger.writer.journal.statistics().appended == 3 * REQUESTS
    assert len(sink_errors.lines) == 1, [x.getMessage() for x in sink_errors.lines]
    assert sink_errors.lines[0].exc_info is not None


def test_the_usage_log_sink_does_not_raise(
    monkeypatch: pytest.MonkeyPatch, sink_errors: Collect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioproxy.usage")
    monkeypatch.setattr(logging.getLogger("trioproxy.usage"), "filters", [Raising()])
    sink = sinks.LogSink()
    record = UsageRecord(ts=0.0, request_id="r", kind="request", key_name="k", team="t",
                         user="u", feature="f", route="x")  # fmt: skip
    for _ in range(REQUESTS):
        sink.submit(record)
    assert len(sink_errors.lines) == 1

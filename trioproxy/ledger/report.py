"""Spend reports from the ledger rollup, and the ``trioproxy report`` command.

    trioproxy report --by team,feature --since 7d [--config FILE | --state-dir DIR |
                     --database-url URL] [--kind request|attempt]

prints a plain aligned table (one row per group, then a TOTAL row) of requests, tokens by
bucket (uncached input, cache reads, cache writes, output, reasoning inside output), cost in
USD, what the gateway's cache saved (``saved``) and what the providers' prompt caches saved
(``prompt_cache_saved``: the same tokens at full input price minus the bill). ``--since`` takes ``30m``, ``24h``, ``7d``, ``2w``
or an ISO date; reports have day granularity (they read ``ledger_daily``), so ``--since 24h``
covers yesterday's and today's UTC days.

``--by day,outcome`` tells, per day, the requests served from those the gateway refused
(``denied``: a budget, a rate limit, overload) and those that failed (``error``: the
providers, the caller gone, the gateway) or were ``interrupted`` (a drain, a crash);
``error_kind`` says why (``budget_exceeded``, ``rate_limited``, ``upstream_timeout``, ...;
``-`` when none). Day rows rolled up before the ledger kept outcomes and whose raw rows were
gone when it was upgraded have none (``-``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from trioproxy.config.demo import DEMO_STATE_DIR
from trioproxy.ledger.backend import (
    DIMENSIONS,
    METRICS,
    LedgerBackend,
    ReportRow,
    check_dimensions,
)
from trioproxy.ledger.factory import SQLITE_NAME, open_backend
from trioproxy.ledger.record import RecordKind

REPORT_TIMEOUT = 60.0
"""Seconds the CLI waits for the database before giving up."""
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_HEADER = (
    "requests",
    "input",
    "cache_read",
    "cache_write",
    "output",
    "reasoning",
    "cost_usd",
    "saved_usd",
    "prompt_cache_saved_usd",
)


async def spend_report(
    backend: LedgerBackend,
    *,
    by: Sequence[str],
    since: dt.datetime,
    until: dt.datetime | None = None,
    kind: RecordKind = "request",
) -> list[ReportRow]:
    """Totals per group of ``by`` (subset of :data:`DIMENSIONS`) for UTC days since ``since``."""
    check_dimensions(by)
    return await backend.query(by=by, since=since, until=until, kind=kind)


def parse_since(text: str, *, now: dt.datetime) -> dt.datetime:
    """``7d`` / ``24h`` / ``30m`` / ``2w`` / ``90s`` before ``now``, or an ISO date/datetime."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if m:
        try:
            return now - dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        except OverflowError:  # further back than a datetime goes
            raise ValueError(f"--since: {text.strip()!r} is too far back") from None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since: expected e.g. 7d, 24h or 2025-01-31, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _values(r: ReportRow) -> list[int]:
    return [getattr(r, m) for m in METRICS]


def format_report(rows: Sequence[ReportRow], by: Sequence[str]) -> str:
    """An aligned plain-text table with a TOTAL row."""
    header = [*by, *_HEADER]
    total = ReportRow.of(
        ("TOTAL", *([""] * (len(by) - 1))),
        [sum(col) for col in zip(*(_values(r) for r in rows), strict=True)] or [0] * 10,
    )

    def cells(r: ReportRow) -> list[str]:
        return [
            *(g or "-" for g in r.group),
            f"{r.requests:,}",
            f"{r.input_tokens:,}",
            f"{r.cache_read_tokens:,}",
            f"{r.cache_write_5m_tokens + r.cache_write_1h_tokens:,}",
            f"{r.output_tokens:,}",
            f"{r.reasoning_tokens:,}",
            f"{r.cost_usd:,.6f}",
            f"{r.saved_usd:,.6f}",
            f"{r.cache_saved_usd:,.6f}",
        ]

    body = [cells(r) for r in rows]
    foot = cells(total)
    foot[1 : len(by)] = [""] * (len(by) - 1)
    table = [header, *body, foot]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    n = len(by)

    def line(row: list[str]) -> str:
        left = [c.ljust(w) for c, w in zip(row[:n], widths[:n], strict=True)]
        right = [c.rjust(w) for c, w in zip(row[n:], widths[n:], strict=True)]
        return "  ".join(left + right).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body), rule, line(foot)])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trioproxy report",
        description="Spend from the ledger. Name the ledger with --config, --state-dir or "
        "--database-url.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--by",
        default="team",
        help=f"comma-separated subset of {','.join(DIMENSIONS)}; outcome: served, denied "
        "(refused: budget, rate limit, overload), error (failed: upstream, client gone), "
        "interrupted; error_kind: why (budget_exceeded, rate_limited, upstream_timeout, ...)",
    )
    p.add_argument("--since", default="7d", help="7d, 24h, 30m, 2w or an ISO date")
    p.add_argument("--config", help="trioproxy TOML config (only its [storage] section is read)")
    p.add_argument("--state-dir", help="SQLite ledger directory (overrides the config)")
    p.add_argument("--database-url", help="PostgreSQL URL (overrides the config)")
    p.add_argument(
        "--kind",
        choices=("request", "attempt"),
        default="request",
        help="request: what callers were billed (one record per request, failed "
        "attempts and losing hedges included); attempt: per upstream attempt, "
        "for spend per target",
    )
    return p


def report_main(argv: list[str]) -> int:
    """``trioproxy report``: print the table; return the exit status."""
    args = _parser().parse_args(argv)
    by = [d.strip() for d in args.by.split(",") if d.strip()]
    try:
        check_dimensions(by)
        since = parse_since(args.since, now=dt.datetime.now(dt.UTC))
    except ValueError as exc:
        print(f"trioproxy report: {exc}", file=sys.stderr)
        return 2
    state_dir, database_url = args.state_dir, args.database_url
    if args.config:
        from trioproxy.config.load import ConfigError, load_storage

        try:
            storage = load_storage(args.config)
        except ConfigError as exc:
            print(f"trioproxy report: {exc}", file=sys.stderr)
            return 2
        state_dir = state_dir or storage.state_dir
        if database_url is None and storage.database_url is not None and not args.state_dir:
            database_url = storage.database_url.reveal()
    if (
        database_url is None
        and state_dir is None
        and (Path(DEMO_STATE_DIR) / SQLITE_NAME).is_file()
    ):
        state_dir = DEMO_STATE_DIR  # as `serve` without --config: the demo's, in this folder
        print(f"trioproxy report: the demo's ledger in {DEMO_STATE_DIR}", file=sys.stderr)
    if database_url is None:
        if state_dir is None:
            print("trioproxy report: no ledger named: give --config, --state-dir or "
                  "--database-url (or run it where the demo ran: its ledger is in "
                  f"{DEMO_STATE_DIR})", file=sys.stderr)  # fmt: skip
            return 2
        ledger = Path(state_dir) / SQLITE_NAME
        if not ledger.is_file():  # never create an empty ledger and report zeros from it
            print(f"trioproxy report: no ledger at {ledger.resolve()}", file=sys.stderr)
            return 1

    async def _run() -> list[ReportRow]:
        with trio.fail_after(REPORT_TIMEOUT):
            backend = await open_backend(state_dir=state_dir or ".", database_url=database_url)
            try:
                return await spend_report(backend, by=by, since=since, kind=args.kind)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await backend.aclose()

    try:
        rows = trio.run(_run)
    except Exception as exc:
        print(f"trioproxy report: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(format_report(rows, by))
    return 0


if __name__ == "__main__":
    sys.exit(report_main(sys.argv[1:]))


__all__ = ["format_report", "parse_since", "report_main", "spend_report"]
